"""One contract for every map broker (broker/map_base.py), run on each of ``map_env.MAP_BROKERS``.

Writes and their results, key modes, limits, idempotency, key expiry delivered as removals,
state pages that stay consistent while the map changes, the change stream (since / limit /
reverse, a stale epoch), and delivery in write order. Delivery may be asynchronous (Redis),
so checks of what the handler got wait for it; ``settled()`` is a barrier for "nothing more".
"""

from __future__ import annotations

import pytest

from trunkline.broker.base import HistoryQuery, StreamPosition
from trunkline.broker.map_base import (
    KeyMode,
    MapLimitExceeded,
    MapOptions,
    MapStateQuery,
    MapWrite,
)
from trunkline.records import ClientInfo, Publication

from .map_env import MapEnv

DURABLE = MapOptions(stream_size=100, stream_ttl=60.0, meta_ttl=3600.0)
EPHEMERAL = MapOptions(meta_ttl=3600.0)
ORDERED = MapOptions(stream_size=100, stream_ttl=60.0, meta_ttl=3600.0, ordered=True)
TTL = 0.3  # short: a broker on real time (Redis) waits it out


def w(key: str, n: int = 0, **kwargs: object) -> MapWrite:
    return MapWrite(key=key, data=b'{"n":%d}' % n, **kwargs)  # type: ignore[arg-type]


async def state(env: MapEnv, channel: str, options: MapOptions = DURABLE, **query: object) -> list[Publication]:
    """Every entry, page by page (limit 2 unless asked), checking each page's cursor."""
    entries: list[Publication] = []
    cursor = ""
    for _ in range(1000):
        page = await env.broker.read_state(channel, MapStateQuery(cursor=cursor, **query), options)  # type: ignore[arg-type]
        entries += page.entries
        if not page.cursor:
            return entries
        cursor = page.cursor
    raise AssertionError("pagination did not end")


def keys(entries: list[Publication]) -> list[str]:
    return [e.key for e in entries]


# --- writes ------------------------------------------------------------------------------------


async def test_publish_sets_a_key_delivers_it_and_keeps_it_in_the_stream(map_broker: MapEnv) -> None:
    b = map_broker.broker
    await b.subscribe("c1")
    info = ClientInfo(user="u1", client="c-1")
    result = await b.publish("c1", w("a", 1, info=info, tags={"t": "1"}), DURABLE)
    assert result.suppressed == "" and result.publication is not None
    pub = result.publication
    assert (pub.key, pub.data, pub.info, pub.tags, pub.removed) == ("a", b'{"n":1}', info, {"t": "1"}, False)
    assert result.position == StreamPosition(1, pub.epoch) and pub.offset == 1 and pub.epoch
    assert pub.time > 0
    assert await map_broker.events.wait_publications(1, "c1") == [pub]
    page = await b.read_state("c1", MapStateQuery(), DURABLE)
    assert [(e.key, e.data, e.offset, e.info) for e in page.entries] == [("a", b'{"n":1}', 1, info)]
    assert page.position == result.position and page.cursor == ""
    stream, top = await b.read_stream("c1", HistoryQuery(), DURABLE)
    assert stream == [pub] and top == result.position
    assert await b.stats("c1") == 1


async def test_offsets_strictly_increase_and_the_state_keeps_the_offset_of_the_last_write(map_broker: MapEnv) -> None:
    b = map_broker.broker
    results = [await b.publish("c1", w(k, i), DURABLE) for i, k in enumerate("abab")]
    assert [r.position.offset for r in results] == [1, 2, 3, 4]
    assert len({r.position.epoch for r in results}) == 1
    entries = await state(map_broker, "c1", limit=10)
    assert [(e.key, e.data, e.offset) for e in entries] == [("a", b'{"n":2}', 3), ("b", b'{"n":3}', 4)]
    assert await b.stats("c1") == 2


async def test_ephemeral_maps_keep_no_stream_and_offsets_stay_zero(map_broker: MapEnv) -> None:
    b = map_broker.broker
    await b.subscribe("e1")
    first = await b.publish("e1", w("a"), EPHEMERAL)
    second = await b.publish("e1", w("b"), EPHEMERAL)
    assert first.position.offset == second.position.offset == 0
    assert first.position.epoch and first.position.epoch == second.position.epoch
    assert first.publication is not None and first.publication.offset == 0
    stream, top = await b.read_stream("e1", HistoryQuery(), EPHEMERAL)
    assert stream == [] and top == StreamPosition(0, first.position.epoch)
    page = await b.read_state("e1", MapStateQuery(), EPHEMERAL)
    assert keys(page.entries) == ["a", "b"] and page.position.epoch == first.position.epoch
    removed = await b.remove("e1", "a", EPHEMERAL)
    assert removed.publication is not None and removed.publication.offset == 0
    assert len(await map_broker.events.wait_publications(3, "e1")) == 3


async def test_remove_delivers_a_removal_and_appends_it_to_the_stream(map_broker: MapEnv) -> None:
    b = map_broker.broker
    await b.subscribe("c1")
    await b.publish("c1", w("a"), DURABLE)
    result = await b.remove("c1", "a", DURABLE, info=ClientInfo(user="u", client="c"), tags={"why": "x"})
    pub = result.publication
    assert pub is not None and (pub.key, pub.removed, pub.data, pub.offset) == ("a", True, b"", 2)
    assert pub.tags == {"why": "x"} and pub.info == ClientInfo(user="u", client="c")
    assert (await map_broker.events.wait_publications(2, "c1"))[1] == pub
    assert await state(map_broker, "c1") == []
    assert await b.stats("c1") == 0
    stream, _ = await b.read_stream("c1", HistoryQuery(since=StreamPosition(1, pub.epoch)), DURABLE)
    assert stream == [pub]


async def test_stream_data_goes_to_the_stream_and_the_state_keeps_data(map_broker: MapEnv) -> None:
    b = map_broker.broker
    await b.subscribe("c1")
    result = await b.publish("c1", MapWrite(key="a", data=b'{"full":1}', stream_data=b'{"diff":1}'), DURABLE)
    assert result.publication is not None and result.publication.data == b'{"diff":1}'
    assert (await map_broker.events.wait_publications(1, "c1"))[0].data == b'{"diff":1}'
    assert (await state(map_broker, "c1"))[0].data == b'{"full":1}'
    stream, _ = await b.read_stream("c1", HistoryQuery(), DURABLE)
    assert [p.data for p in stream] == [b'{"diff":1}']


# --- key modes, limits, idempotency ------------------------------------------------------------


async def test_if_new_and_if_exists(map_broker: MapEnv) -> None:
    b = map_broker.broker
    await b.subscribe("c1")
    first = await b.publish("c1", w("a", 1, key_mode=KeyMode.IF_NEW), DURABLE)
    assert first.publication is not None
    again = await b.publish("c1", w("a", 2, key_mode=KeyMode.IF_NEW), DURABLE)
    assert (again.suppressed, again.publication, again.position) == ("key_exists", None, first.position)
    missing = await b.publish("c1", w("b", 3, key_mode=KeyMode.IF_EXISTS), DURABLE)
    assert (missing.suppressed, missing.publication, missing.position) == ("key_not_found", None, first.position)
    update = await b.publish("c1", w("a", 4, key_mode=KeyMode.IF_EXISTS), DURABLE)
    assert update.suppressed == "" and update.position.offset == 2
    gone = await b.remove("c1", "zz", DURABLE)
    assert (gone.suppressed, gone.publication) == ("key_not_found", None)
    await map_broker.settled()
    assert [p.data for p in map_broker.events.publications("c1")] == [b'{"n":1}', b'{"n":4}']
    assert [(e.key, e.data) for e in await state(map_broker, "c1")] == [("a", b'{"n":4}')]


async def test_max_keys_refuses_a_new_key_into_a_full_channel(map_broker: MapEnv) -> None:
    b = map_broker.broker
    limited = MapOptions(stream_size=100, stream_ttl=60.0, meta_ttl=3600.0, max_keys=2)
    await b.publish("c1", w("a"), limited)
    await b.publish("c1", w("b"), limited)
    with pytest.raises(MapLimitExceeded):
        await b.publish("c1", w("c"), limited)
    assert (await b.publish("c1", w("a", 9), limited)).publication is not None, "an existing key may change"
    assert keys(await state(map_broker, "c1", limited)) == ["a", "b"]
    await b.remove("c1", "b", limited)
    assert (await b.publish("c1", w("c"), limited)).publication is not None
    assert await b.stats("c1") == 2
    assert (await b.publish("c1", w("d"), DURABLE)).publication is not None, "max_keys 0: unlimited"


async def test_an_idempotency_key_publishes_once(map_broker: MapEnv) -> None:
    b = map_broker.broker
    await b.subscribe("c1")
    first = await b.publish("c1", w("a", 1, idempotency_key="op-1"), DURABLE)
    repeat = await b.publish("c1", w("a", 2, idempotency_key="op-1"), DURABLE)
    assert (repeat.suppressed, repeat.publication, repeat.position) == ("idempotency", None, first.position)
    other = await b.publish("c1", w("a", 3, idempotency_key="op-2"), DURABLE)
    assert other.position.offset == 2
    elsewhere = await b.publish("c2", w("a", 4, idempotency_key="op-1"), DURABLE)
    assert elsewhere.publication is not None, "idempotency keys are per channel"
    removal = await b.remove("c1", "a", DURABLE, idempotency_key="rm-1")
    assert (await b.remove("c1", "a", DURABLE, idempotency_key="rm-1")).suppressed == "idempotency"
    assert removal.position.offset == 3
    await map_broker.settled()
    assert [p.offset for p in map_broker.events.publications("c1")] == [1, 2, 3]


# --- expiry ------------------------------------------------------------------------------------


async def test_keys_expire_after_key_ttl_and_the_expiry_is_delivered_as_a_removal(map_broker: MapEnv) -> None:
    b = map_broker.broker
    opts = MapOptions(stream_size=100, stream_ttl=60.0, meta_ttl=3600.0, key_ttl=TTL)
    await b.subscribe("c1")
    await b.publish("c1", w("a"), opts)
    await b.publish("c1", w("keep"), DURABLE)  # no key_ttl: stays

    async def expired() -> bool:
        return keys(await state(map_broker, "c1", opts)) == ["keep"]

    assert not await expired()
    await map_broker.eventually(expired, after=TTL + 0.05)
    pubs = await map_broker.events.wait_publications(3, "c1")
    removal = pubs[2]
    assert (removal.key, removal.removed, removal.data, removal.offset) == ("a", True, b"", 3)
    stream, top = await b.read_stream("c1", HistoryQuery(since=StreamPosition(2, removal.epoch)), opts)
    assert [(p.key, p.removed, p.offset) for p in stream] == [("a", True, 3)] and top.offset == 3
    assert await b.stats("c1") == 1


async def test_rewriting_a_key_renews_its_ttl(map_broker: MapEnv) -> None:
    b = map_broker.broker
    opts = MapOptions(meta_ttl=3600.0, key_ttl=TTL * 2)
    await b.publish("e1", w("a"), opts)
    await map_broker.advance(TTL * 1.2)
    await b.publish("e1", w("a", 1), opts)
    await map_broker.advance(TTL * 1.2)  # past the first deadline, not the second
    assert keys(await state(map_broker, "e1", opts)) == ["a"]

    async def gone() -> bool:
        return await b.stats("e1") == 0

    await map_broker.eventually(gone, after=TTL)


async def test_if_new_with_refresh_renews_the_ttl_without_an_update(map_broker: MapEnv) -> None:
    b = map_broker.broker
    opts = MapOptions(meta_ttl=3600.0, key_ttl=TTL * 2)
    await b.subscribe("e1")
    await b.publish("e1", w("u"), opts)
    await map_broker.advance(TTL * 1.2)
    plain = await b.publish("e1", w("u", key_mode=KeyMode.IF_NEW), opts)
    refreshed = await b.publish("e1", w("u", key_mode=KeyMode.IF_NEW, refresh_ttl_on_suppress=True), opts)
    assert plain.suppressed == refreshed.suppressed == "key_exists"
    await map_broker.advance(TTL * 1.2)
    assert keys(await state(map_broker, "e1", opts)) == ["u"], "the refresh moved the deadline"
    await map_broker.settled()
    assert len(map_broker.events.publications("e1")) == 1, "a suppressed write delivers nothing"


async def test_a_key_written_without_ttl_stops_expiring(map_broker: MapEnv) -> None:
    b = map_broker.broker
    expiring = MapOptions(stream_size=10, stream_ttl=60.0, meta_ttl=3600.0, key_ttl=TTL)
    forever = MapOptions(stream_size=10, stream_ttl=60.0, meta_ttl=3600.0)
    await b.publish("c1", w("a"), expiring)
    await b.publish("c1", w("a", 1), forever)
    await map_broker.advance(TTL * 2)
    assert keys(await state(map_broker, "c1", forever)) == ["a"]


# --- state pages -------------------------------------------------------------------------------


async def test_pages_come_in_key_order_with_cursors(map_broker: MapEnv) -> None:
    b = map_broker.broker
    names = [f"k{i:02d}" for i in range(11)][::-1]
    for name in names:
        await b.publish("c1", w(name), DURABLE)
    first = await b.read_state("c1", MapStateQuery(limit=4), DURABLE)
    assert keys(first.entries) == ["k00", "k01", "k02", "k03"] and first.cursor
    assert first.position.offset == 11
    assert keys(await state(map_broker, "c1", limit=4)) == sorted(names)
    assert keys(await state(map_broker, "c1", limit=11)) == sorted(names)
    one = await b.read_state("c1", MapStateQuery(key="k05"), DURABLE)
    assert keys(one.entries) == ["k05"] and one.cursor == ""
    none = await b.read_state("c1", MapStateQuery(key="nope"), DURABLE)
    assert none.entries == [] and none.position.offset == 11


async def test_pagination_is_stable_while_the_map_changes(map_broker: MapEnv) -> None:
    b = map_broker.broker
    for i in range(20):
        await b.publish("c1", w(f"k{i:02d}"), DURABLE)
    seen: list[str] = []
    cursor = ""
    for step in range(100):
        page = await b.read_state("c1", MapStateQuery(cursor=cursor, limit=3), DURABLE)
        seen += keys(page.entries)
        if not page.cursor:
            break
        cursor = page.cursor
        # between pages: new keys before and after the cursor, updates, a removal ahead
        await b.publish("c1", w(f"a-before-{step}"), DURABLE)
        await b.publish("c1", w(f"z-after-{step}"), DURABLE)
        await b.publish("c1", w(seen[0], step), DURABLE)
        if step == 1:
            await b.remove("c1", "k15", DURABLE)
    stayed = [f"k{i:02d}" for i in range(20) if i != 15]
    assert len(seen) == len(set(seen)), "no key twice"
    assert [k for k in seen if k.startswith("k")] == stayed, "every key that stayed, once, in order"
    assert "k15" not in seen
    assert not any(k.startswith("a-before") for k in seen), "keys written behind the cursor are not seen"
    assert seen == sorted(seen)


async def test_ordered_maps_page_by_score(map_broker: MapEnv) -> None:
    b = map_broker.broker
    scores = {"a": 5, "b": 1, "c": 9, "d": 5, "e": 3, "f": 7}
    for key, score in scores.items():
        await b.publish("o1", w(key, score=score), ORDERED)
    desc = await state(map_broker, "o1", ORDERED, limit=2)
    assert [(e.key, e.score) for e in desc] == [("c", 9), ("f", 7), ("d", 5), ("a", 5), ("e", 3), ("b", 1)]
    asc = await state(map_broker, "o1", ORDERED, limit=4, asc=True)
    assert keys(asc) == ["b", "e", "a", "d", "f", "c"]
    await b.publish("o1", w("b", score=100), ORDERED)  # a new score moves the key
    assert keys(await state(map_broker, "o1", ORDERED, limit=3))[:2] == ["b", "c"]


async def test_ordered_pagination_is_stable_while_scores_change(map_broker: MapEnv) -> None:
    b = map_broker.broker
    for i in range(12):
        await b.publish("o1", w(f"k{i:02d}", score=i * 10), ORDERED)
    first = await b.read_state("o1", MapStateQuery(limit=4), ORDERED)
    assert keys(first.entries) == ["k11", "k10", "k09", "k08"]
    # the cursor's own key moves away, a key behind it jumps ahead, one ahead is removed
    await b.publish("o1", w("k08", score=1000), ORDERED)
    await b.publish("o1", w("k03", score=5000), ORDERED)
    await b.remove("o1", "k05", ORDERED)
    rest: list[str] = []
    cursor = first.cursor
    for _ in range(10):
        page = await b.read_state("o1", MapStateQuery(cursor=cursor, limit=4), ORDERED)
        rest += keys(page.entries)
        cursor = page.cursor
        if not cursor:
            break
    assert rest == ["k07", "k06", "k04", "k02", "k01", "k00"]


async def test_a_cursor_the_broker_did_not_give_is_refused(map_broker: MapEnv) -> None:
    b = map_broker.broker
    await b.publish("c1", w("a"), DURABLE)
    await b.publish("o1", w("a"), ORDERED)
    with pytest.raises(ValueError):
        await b.read_state("c1", MapStateQuery(cursor="garbage"), DURABLE)
    with pytest.raises(ValueError):
        await b.read_state("o1", MapStateQuery(cursor="snot-a-number:a"), ORDERED)


# --- stream reads ------------------------------------------------------------------------------


async def test_read_stream_since_limit_reverse(map_broker: MapEnv) -> None:
    b = map_broker.broker
    for i in range(6):
        await b.publish("c1", w(f"k{i % 2}", i), DURABLE)
    everything, top = await b.read_stream("c1", HistoryQuery(), DURABLE)
    assert [p.offset for p in everything] == [1, 2, 3, 4, 5, 6] and top.offset == 6
    epoch = top.epoch
    since, _ = await b.read_stream("c1", HistoryQuery(since=StreamPosition(2, epoch), limit=3), DURABLE)
    assert [p.offset for p in since] == [3, 4, 5]
    back, _ = await b.read_stream("c1", HistoryQuery(since=StreamPosition(5, epoch), reverse=True), DURABLE)
    assert [p.offset for p in back] == [4, 3, 2, 1]
    only, position = await b.read_stream("c1", HistoryQuery(limit=0), DURABLE)
    assert only == [] and position == top
    at_top, _ = await b.read_stream("c1", HistoryQuery(since=top), DURABLE)
    assert at_top == []


async def test_a_stale_epoch_reads_nothing_and_gets_the_current_position(map_broker: MapEnv) -> None:
    b = map_broker.broker
    await b.publish("c1", w("a"), DURABLE)
    await b.publish("c1", w("b"), DURABLE)
    stale, top = await b.read_stream("c1", HistoryQuery(since=StreamPosition(1, "other-epoch")), DURABLE)
    assert stale == [] and top.offset == 2 and top.epoch != "other-epoch"


async def test_the_stream_keeps_stream_size_entries(map_broker: MapEnv) -> None:
    b = map_broker.broker
    small = MapOptions(stream_size=3, stream_ttl=60.0, meta_ttl=3600.0)
    for i in range(7):
        await b.publish("c1", w(f"k{i}"), small)
    stream, top = await b.read_stream("c1", HistoryQuery(), small)
    assert [p.offset for p in stream] == [5, 6, 7] and top.offset == 7
    # a client at offset 2 sees the gap: the first entry after it is not 3
    behind, _ = await b.read_stream("c1", HistoryQuery(since=StreamPosition(2, top.epoch)), small)
    assert behind[0].offset == 5


async def test_the_stream_expires_after_stream_ttl_but_the_position_stays(map_broker: MapEnv) -> None:
    b = map_broker.broker
    short = MapOptions(stream_size=10, stream_ttl=TTL, meta_ttl=3600.0)
    first = await b.publish("c1", w("a"), short)
    await b.publish("c1", w("b"), short)

    async def stream_gone() -> bool:
        stream, _ = await b.read_stream("c1", HistoryQuery(), short)
        return stream == []

    await map_broker.eventually(stream_gone, after=TTL + 0.05)
    _, top = await b.read_stream("c1", HistoryQuery(), short)
    assert top == StreamPosition(2, first.position.epoch)
    assert keys(await state(map_broker, "c1", short)) == ["a", "b"], "the state outlives the stream"


async def test_clear_drops_state_and_stream_and_starts_a_new_epoch(map_broker: MapEnv) -> None:
    b = map_broker.broker
    first = await b.publish("c1", w("a"), DURABLE)
    await b.clear("c1")
    assert await b.stats("c1") == 0
    assert await state(map_broker, "c1") == []
    after = await b.publish("c1", w("b"), DURABLE)
    assert after.position.epoch != first.position.epoch and after.position.offset == 1
    stale, _ = await b.read_stream("c1", HistoryQuery(since=first.position), DURABLE)
    assert stale == []


async def test_the_epoch_of_an_unwritten_channel_is_stable_across_reads(map_broker: MapEnv) -> None:
    b = map_broker.broker
    page = await b.read_state("new", MapStateQuery(), DURABLE)
    _, position = await b.read_stream("new", HistoryQuery(), DURABLE)
    written = await b.publish("new", w("a"), DURABLE)
    assert page.position == position == StreamPosition(0, written.position.epoch)
    assert page.entries == []


# --- delivery ----------------------------------------------------------------------------------


async def test_delivery_is_in_write_order_and_only_to_subscribed_channels(map_broker: MapEnv) -> None:
    b = map_broker.broker
    await b.subscribe("c1")
    results = []
    for i in range(30):
        if i % 5 == 4:
            results.append(await b.remove("c1", f"k{i % 3}", DURABLE))
        else:
            results.append(await b.publish("c1", w(f"k{i % 3}", i), DURABLE))
        await b.publish("quiet", w("x", i), DURABLE)
    delivered = [r.publication for r in results if r.publication is not None]
    got = await map_broker.events.wait_publications(len(delivered), "c1")
    assert got == delivered
    assert [p.offset for p in got] == sorted(p.offset for p in got)
    stream, _ = await b.read_stream("c1", HistoryQuery(), DURABLE)
    assert stream == got, "delivery order is stream order"
    await b.unsubscribe("c1")
    await b.publish("c1", w("late"), DURABLE)
    await map_broker.settled()
    assert map_broker.events.publications("quiet") == []
    assert len(map_broker.events.publications("c1")) == len(delivered)


async def test_ping(map_broker: MapEnv) -> None:
    await map_broker.broker.ping()


async def test_when_the_meta_expires_the_keys_stay_under_a_new_epoch(map_broker: MapEnv) -> None:
    b = map_broker.broker
    persistent = MapOptions(stream_size=10, stream_ttl=60.0, meta_ttl=TTL)
    first = await b.publish("p1", w("a"), persistent)

    async def new_epoch() -> bool:
        page = await b.read_state("p1", MapStateQuery(), persistent)
        return page.position.epoch != first.position.epoch

    await map_broker.eventually(new_epoch, after=TTL + 0.05)
    page = await b.read_state("p1", MapStateQuery(), persistent)
    assert keys(page.entries) == ["a"] and page.entries[0].epoch == page.position.epoch
    stale, _ = await b.read_stream("p1", HistoryQuery(since=first.position), persistent)
    assert stale == [], "a client of the old epoch re-reads the state"
