"""The in-process index: live, positioned and pending subscribers, wire shapes, join/leave, lookups."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from trunkline.hub.registry import Hub, WireShape
from trunkline.protocol.codec import JSON_SHAPE, encode_publication_push, publication
from trunkline.records import ClientInfo, Publication

EPOCH = "e1"


def rec(offset: int = 1, epoch: str = EPOCH, data: bytes = b'{"n":1}') -> Publication:
    return Publication(data=data, offset=offset, epoch=epoch)


class Shape:
    """A wire shape that says what it encoded and counts its calls."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.encoded: list[tuple[str, int]] = []
        self.join_leaves = 0

    def publication(self, channel: str, pub: Publication) -> bytes:
        self.encoded.append((channel, pub.offset))
        return b"%s|%s|%d|%s|%s" % (self.name.encode(), channel.encode(), pub.offset, pub.epoch.encode(), pub.data)

    def join_leave(self, channel: str, kind: str, info: bytes) -> bytes:
        self.join_leaves += 1
        return b"%s|%s|%s|%s" % (self.name.encode(), channel.encode(), kind.encode(), info)


A_SHAPE = Shape("A")


@dataclass(eq=False)
class Conn:
    """Stands in for a session: records what its writer would receive."""

    name: str
    pushed: list[bytes] = field(default_factory=list)
    buffered: list[Publication] = field(default_factory=list)

    def push(self, data: bytes) -> None:
        self.pushed.append(data)

    def buffer(self, pub: Publication) -> None:
        self.buffered.append(pub)


def live(hub: Hub[Conn], channel: str, conn: Conn, *, join_leave: bool = False, shape: WireShape = JSON_SHAPE) -> None:
    hub.add_pending(channel, conn, conn.buffer)
    hub.activate(channel, conn, shape, conn.push, join_leave=join_leave)


def offsets_of(conn: Conn) -> list[int]:
    return [json.loads(d)["push"]["pub"].get("offset", 0) for d in conn.pushed]


# ---------------------------------------------------------------- pending -> live


def test_pending_subscriber_gets_the_records_through_its_buffer() -> None:
    hub: Hub[Conn] = Hub()
    a = Conn("a")
    assert hub.add_pending("news", a, a.buffer) is True
    assert hub.has_subscribers("news")
    assert hub.is_pending("news", a)
    assert hub.subscribers("news") == []
    record = rec(1)
    assert hub.broadcast("news", record) == (0, [])  # counts live subscribers only
    assert a.pushed == []
    assert a.buffered == [record]
    assert a.buffered[0] is record, "the record itself, not a copy or bytes"


def test_activate_switches_from_buffer_to_push_in_order() -> None:
    hub: Hub[Conn] = Hub()
    a = Conn("a")
    hub.add_pending("news", a, a.buffer)
    hub.broadcast("news", rec(1))
    hub.activate("news", a, JSON_SHAPE, a.push)
    assert not hub.is_pending("news", a)
    hub.broadcast("news", rec(2))
    hub.broadcast("news", rec(3))
    assert [p.offset for p in a.buffered] == [1]
    assert offsets_of(a) == [2, 3]
    assert hub.subscribers("news") == [a]


def test_add_pending_reports_a_new_channel_only_once() -> None:
    hub: Hub[Conn] = Hub()
    a, b, c = Conn("a"), Conn("b"), Conn("c")
    assert hub.add_pending("news", a, a.buffer) is True
    assert hub.add_pending("news", b, b.buffer) is False
    hub.activate("news", a, JSON_SHAPE, a.push)
    assert hub.add_pending("news", c, c.buffer) is False
    assert hub.add_pending("other", c, c.buffer) is True


def test_live_and_pending_subscribers_in_the_same_channel() -> None:
    hub: Hub[Conn] = Hub()
    a, b = Conn("a"), Conn("b")
    live(hub, "news", a)
    hub.add_pending("news", b, b.buffer)
    record = rec(1)
    assert hub.broadcast("news", record) == (1, [])
    assert len(a.pushed) == 1
    assert b.buffered == [record]


# ---------------------------------------------------------------- fan-out


def test_fan_out_writes_the_same_bytes_object_to_every_subscriber() -> None:
    hub: Hub[Conn] = Hub()
    conns = [Conn(str(i)) for i in range(50)]
    for conn in conns:
        live(hub, "news", conn)
    assert hub.broadcast("news", rec(1)) == (50, [])
    first = conns[0].pushed[0]
    assert all(len(c.pushed) == 1 and c.pushed[0] is first for c in conns)


def test_fan_out_bytes_equal_the_codec_encoding() -> None:
    hub: Hub[Conn] = Hub()
    a = Conn("a")
    live(hub, "chat:room", a)
    info = ClientInfo(user="u", client="c", conn_info=b'{"n":"x"}')
    record = Publication(data=b'{"t":"hi"}', info=info, tags={"k": "v"}, time=5, offset=5, epoch=EPOCH)
    hub.broadcast("chat:room", record)
    assert a.pushed == [encode_publication_push("chat:room", publication(record))]
    assert json.loads(a.pushed[0]) == {
        "push": {
            "channel": "chat:room",
            "pub": {
                "data": {"t": "hi"},
                "info": {"user": "u", "client": "c", "conn_info": {"n": "x"}},
                "offset": 5,
                "tags": {"k": "v"},
            },
        }
    }


def test_a_publication_without_history_has_no_offset_on_the_wire() -> None:
    hub: Hub[Conn] = Hub()
    a = Conn("a")
    live(hub, "news", a)
    hub.broadcast("news", Publication(data=b"[1]"))
    assert json.loads(a.pushed[0]) == {"push": {"channel": "news", "pub": {"data": [1]}}}


def test_fan_out_only_reaches_the_channel() -> None:
    hub: Hub[Conn] = Hub()
    a, b = Conn("a"), Conn("b")
    live(hub, "news", a)
    live(hub, "sport", b)
    assert hub.broadcast("news", rec(1)) == (1, [])
    assert hub.broadcast("nobody", rec(1)) == (0, [])
    assert len(a.pushed) == 1
    assert b.pushed == []


def test_channel_names_are_escaped() -> None:
    hub: Hub[Conn] = Hub()
    a = Conn("a")
    channel = 'we"ird\n\\chan\u2028é'
    live(hub, channel, a, join_leave=True)
    hub.broadcast(channel, rec(1))
    hub.broadcast_join_leave(channel, "join", b'{"user":"1","client":"c"}')
    assert len(a.pushed) == 2
    for data in a.pushed:
        assert b"\n" not in data
        assert json.loads(data)["push"]["channel"] == channel


def test_each_shape_is_encoded_once_per_publication() -> None:
    """2 shapes × 40 live + 40 positioned subscribers: 2 encodings per publication, each shared by its shape."""
    hub: Hub[Conn] = Hub()
    a, b = Shape("A"), Shape("B")
    conns: list[tuple[Conn, Shape]] = []
    for i in range(160):
        conn, shape = Conn(str(i)), (a if i % 2 else b)
        hub.add_pending("news", conn, conn.buffer)
        positioned = i >= 80
        if positioned:
            assert hub.join_position("news", conn, 0, EPOCH, lambda ok: None) == (True, [])
        hub.activate("news", conn, shape, conn.push, positioned=positioned, join_leave=True)
        conns.append((conn, shape))
    for offset in range(1, 11):
        assert hub.broadcast("news", rec(offset)) == (160, [])
    assert a.encoded == b.encoded == [("news", o) for o in range(1, 11)]
    for conn, shape in conns:
        assert conn.pushed == [b'%s|news|%d|e1|{"n":1}' % (shape.name.encode(), o) for o in range(1, 11)]
    by_shape: dict[str, set[int]] = {"A": set(), "B": set()}
    for conn, shape in conns:
        by_shape[shape.name].add(id(conn.pushed[0]))
    assert all(len(ids) == 1 for ids in by_shape.values()), "one bytes object per shape"
    assert hub.broadcast_join_leave("news", "join", b"{}") == 160
    assert (a.join_leaves, b.join_leaves) == (1, 1)


def test_a_shape_without_live_subscribers_is_not_encoded() -> None:
    hub: Hub[Conn] = Hub()
    a, b = Shape("A"), Shape("B")
    x, y = Conn("x"), Conn("y")
    live(hub, "news", x, shape=a)
    hub.add_pending("news", y, y.buffer)
    hub.broadcast("news", rec(1))
    assert a.encoded == [("news", 1)]
    assert b.encoded == []
    assert y.buffered == [rec(1)], "pending subscribers get the record, unencoded"


# ---------------------------------------------------------------- positioned vs live


def positioned(
    hub: Hub[Conn], channel: str, conn: Conn, offset: int, *, epoch: str = EPOCH, shape: WireShape = A_SHAPE
) -> None:
    hub.add_pending(channel, conn, conn.buffer)
    ready, missed = hub.join_position(channel, conn, offset, epoch, lambda ok: None)
    assert (ready, missed) == (True, [])
    hub.activate(channel, conn, shape, conn.push, positioned=True)


def test_a_gap_drops_only_positioned_subscribers() -> None:
    hub: Hub[Conn] = Hub()
    p1, p2, lv = Conn("p1"), Conn("p2"), Conn("live")
    positioned(hub, "news", p1, 3)
    positioned(hub, "news", p2, 3)
    live(hub, "news", lv, shape=A_SHAPE)
    assert hub.position("news") == (3, EPOCH)
    assert hub.broadcast("news", rec(4)) == (3, [])
    count, missed = hub.broadcast("news", rec(6))  # 5 was lost
    assert count == 1, "only the live subscriber got 6"
    assert set(missed) == {p1, p2}
    assert [d.split(b"|")[2] for d in p1.pushed] == [b"4"]
    assert [d.split(b"|")[2] for d in p2.pushed] == [b"4"]
    assert [d.split(b"|")[2] for d in lv.pushed] == [b"4", b"6"]
    assert hub.subscribers("news") == [lv]
    assert hub.position("news") is None, "nobody positioned is left"
    assert hub.positioned_channels() == []
    assert hub.broadcast("news", rec(7)) == (1, []), "the dropped ones get nothing more"
    assert len(p1.pushed) == 1


def test_a_stale_publication_reaches_live_subscribers_only() -> None:
    hub: Hub[Conn] = Hub()
    p, lv = Conn("p"), Conn("live")
    positioned(hub, "news", p, 5)
    live(hub, "news", lv, shape=A_SHAPE)
    assert hub.broadcast("news", rec(5)) == (1, [])  # arrived late: p joined from top 5
    assert hub.broadcast("news", rec(3)) == (1, [])
    assert p.pushed == []
    assert len(lv.pushed) == 2
    assert hub.broadcast("news", rec(6)) == (2, [])
    assert hub.position("news") == (6, EPOCH)


def test_a_new_epoch_is_a_gap() -> None:
    hub: Hub[Conn] = Hub()
    p, lv = Conn("p"), Conn("live")
    positioned(hub, "news", p, 5)
    live(hub, "news", lv, shape=A_SHAPE)
    count, missed = hub.broadcast("news", rec(1, epoch="e2"))
    assert (count, missed) == (1, [p])
    assert p.pushed == []


def test_publications_without_offset_reach_everyone_and_keep_the_position() -> None:
    hub: Hub[Conn] = Hub()
    p = Conn("p")
    positioned(hub, "news", p, 5)
    assert hub.broadcast("news", Publication(data=b"{}")) == (1, [])
    assert hub.position("news") == (5, EPOCH)
    assert hub.broadcast("news", rec(6)) == (1, [])


def test_positioned_join_leave_subscribers_lose_join_leave_after_a_gap() -> None:
    hub: Hub[Conn] = Hub()
    p = Conn("p")
    hub.add_pending("news", p, p.buffer)
    hub.join_position("news", p, 1, EPOCH, lambda ok: None)
    hub.activate("news", p, A_SHAPE, p.push, positioned=True, join_leave=True)
    assert hub.broadcast_join_leave("news", "join", b"{}") == 1
    assert hub.broadcast("news", rec(3))[1] == [p]
    assert hub.broadcast_join_leave("news", "join", b"{}") == 0
    assert hub.subscribers("news") == []
    assert hub.remove("news", p) is True, "its resubscribe releases the channel"


def test_declare_drops_positioned_subscribers_and_moves_the_position() -> None:
    hub: Hub[Conn] = Hub()
    p, lv = Conn("p"), Conn("live")
    positioned(hub, "news", p, 3)
    live(hub, "news", lv, shape=A_SHAPE)
    assert hub.declare("news", 9, EPOCH) == [p]
    assert hub.subscribers("news") == [lv]
    assert hub.declare("nobody", 1, EPOCH) == []
    q = Conn("q")
    positioned(hub, "news", q, 9)
    assert hub.position("news") == (9, EPOCH)
    assert hub.broadcast("news", rec(10)) == (2, [])
    assert len(q.pushed) == 1


def test_join_position_behind_the_node_is_ready_at_once() -> None:
    hub: Hub[Conn] = Hub()
    p, q = Conn("p"), Conn("q")
    positioned(hub, "news", p, 5)
    hub.add_pending("news", q, q.buffer)
    assert hub.join_position("news", q, 3, EPOCH, lambda ok: None) == (True, [])
    assert hub.position("news") == (5, EPOCH), "the channel keeps its position"


def test_join_position_in_a_newer_epoch_resubscribes_the_others() -> None:
    hub: Hub[Conn] = Hub()
    p, q = Conn("p"), Conn("q")
    positioned(hub, "news", p, 5)
    hub.add_pending("news", q, q.buffer)
    assert hub.join_position("news", q, 2, "e2", lambda ok: None) == (True, [p])
    assert hub.position("news") is None  # q not active yet, p gone
    hub.activate("news", q, A_SHAPE, q.push, positioned=True)
    assert hub.position("news") == (2, "e2")
    assert hub.broadcast("news", rec(3, "e2")) == (1, [])


def test_a_lone_joiner_sets_the_position() -> None:
    hub: Hub[Conn] = Hub()
    lv, q = Conn("live"), Conn("q")
    live(hub, "news", lv, shape=A_SHAPE)
    hub.broadcast("news", rec(1))  # live subscribers do not make the position matter
    hub.add_pending("news", q, q.buffer)
    assert hub.join_position("news", q, 7, EPOCH, lambda ok: None) == (True, [])
    hub.activate("news", q, A_SHAPE, q.push, positioned=True)
    assert hub.position("news") == (7, EPOCH)
    assert hub.join_position("unknown", q, 1, EPOCH, lambda ok: None) == (True, [])


# ---------------------------------------------------------------- waiters


class Waiter:
    def __init__(self, hub: Hub[Conn], channel: str, offset: int, epoch: str = EPOCH) -> None:
        self.conn = Conn(f"w{offset}")
        self.resumed: list[bool] = []
        hub.add_pending(channel, self.conn, self.conn.buffer)
        self.ready, self.missed = hub.join_position(channel, self.conn, offset, epoch, self.resumed.append)


def test_a_joiner_ahead_of_the_feed_waits_until_the_node_reaches_its_offset() -> None:
    hub: Hub[Conn] = Hub()
    p = Conn("p")
    positioned(hub, "news", p, 5)
    w = Waiter(hub, "news", 7)  # the stream read said 7; this node has seen 5
    assert (w.ready, w.missed) == (False, [])
    assert hub.is_pending("news", w.conn)
    assert hub.positioned_channels() == ["news"]
    hub.broadcast("news", rec(6))
    assert w.resumed == []
    hub.broadcast("news", rec(7))
    assert w.resumed == [True]
    assert [p.offset for p in w.conn.buffered] == [6, 7], "the buffer holds what the node got meanwhile"
    hub.broadcast("news", rec(8))
    assert w.resumed == [True], "resumed once"


def test_a_waiter_is_told_it_missed_data_on_an_epoch_change() -> None:
    hub: Hub[Conn] = Hub()
    p = Conn("p")
    positioned(hub, "news", p, 5)
    w = Waiter(hub, "news", 7)
    assert hub.broadcast("news", rec(1, epoch="e2")) == (0, [p])
    assert w.resumed == [False]


def test_a_waiter_is_told_it_missed_data_when_a_gap_is_declared_past_it() -> None:
    hub: Hub[Conn] = Hub()
    p = Conn("p")
    positioned(hub, "news", p, 5)
    behind, exact, ahead = Waiter(hub, "news", 7), Waiter(hub, "news", 9), Waiter(hub, "news", 12)
    assert hub.declare("news", 9, EPOCH) == [p]
    assert behind.resumed == [False], "7 < 9: it may miss 8 and 9"
    assert exact.resumed == [True], "exactly at the declared top: it has everything"
    assert ahead.resumed == [], "still ahead: it waits on"
    hub.broadcast("news", rec(10))
    hub.broadcast("news", rec(11))
    hub.broadcast("news", rec(12))
    assert ahead.resumed == [True]


def test_a_waiter_resumes_after_a_gap_that_lands_on_its_offset() -> None:
    hub: Hub[Conn] = Hub()
    p = Conn("p")
    positioned(hub, "news", p, 5)
    w = Waiter(hub, "news", 7)
    _, missed = hub.broadcast("news", rec(7))  # 6 lost
    assert missed == [p]
    assert w.resumed == [True], "the waiter read the stream at 7: its buffer continues from there"


def test_a_removed_waiter_is_never_resumed() -> None:
    hub: Hub[Conn] = Hub()
    p = Conn("p")
    positioned(hub, "news", p, 5)
    w = Waiter(hub, "news", 7)
    hub.remove("news", w.conn)
    hub.broadcast("news", rec(6))
    hub.broadcast("news", rec(7))
    assert w.resumed == []


# ---------------------------------------------------------------- join / leave


def test_join_and_leave_only_reach_join_leave_subscribers() -> None:
    hub: Hub[Conn] = Hub()
    a, b, pending = Conn("a"), Conn("b"), Conn("p")
    live(hub, "news", a, join_leave=True)
    live(hub, "news", b, join_leave=False)
    hub.add_pending("news", pending, pending.buffer)
    info = b'{"user":"42","client":"c1"}'
    assert hub.broadcast_join_leave("news", "join", info) == 1
    assert hub.broadcast_join_leave("news", "leave", info) == 1
    assert [json.loads(d) for d in a.pushed] == [
        {"push": {"channel": "news", "join": {"info": {"user": "42", "client": "c1"}}}},
        {"push": {"channel": "news", "leave": {"info": {"user": "42", "client": "c1"}}}},
    ]
    assert b.pushed == []
    assert pending.pushed == []
    assert pending.buffered == []


def test_join_leave_without_subscribers() -> None:
    hub: Hub[Conn] = Hub()
    assert hub.broadcast_join_leave("news", "join", b'{"user":"","client":"c"}') == 0


def test_removed_subscriber_gets_no_join_leave() -> None:
    hub: Hub[Conn] = Hub()
    a = Conn("a")
    live(hub, "news", a, join_leave=True)
    hub.remove("news", a)
    assert hub.broadcast_join_leave("news", "leave", b'{"user":"","client":"c"}') == 0
    assert a.pushed == []


# ---------------------------------------------------------------- remove


def test_remove_returns_true_for_the_last_subscriber() -> None:
    hub: Hub[Conn] = Hub()
    a, b = Conn("a"), Conn("b")
    live(hub, "news", a)
    live(hub, "news", b)
    assert hub.remove("news", a) is False
    assert hub.has_subscribers("news")
    assert hub.remove("news", b) is True
    assert not hub.has_subscribers("news")
    assert hub.channels() == {}
    assert hub.broadcast("news", rec(1)) == (0, [])
    assert a.pushed == []
    assert b.pushed == []


def test_a_pending_subscriber_keeps_the_channel() -> None:
    hub: Hub[Conn] = Hub()
    a, b = Conn("a"), Conn("b")
    live(hub, "news", a)
    hub.add_pending("news", b, b.buffer)
    assert hub.remove("news", a) is False
    assert hub.remove("news", b) is True


def test_remove_of_a_pending_subscriber() -> None:
    hub: Hub[Conn] = Hub()
    a = Conn("a")
    hub.add_pending("news", a, a.buffer)
    assert hub.remove("news", a) is True
    hub.broadcast("news", rec(1))
    assert a.buffered == []


def test_remove_of_an_unknown_subscriber_is_harmless() -> None:
    hub: Hub[Conn] = Hub()
    a, b = Conn("a"), Conn("b")
    assert hub.remove("news", a) is True
    live(hub, "news", a)
    assert hub.remove("news", b) is False
    assert hub.subscribers("news") == [a]


def test_the_last_positioned_subscriber_leaving_forgets_the_position() -> None:
    hub: Hub[Conn] = Hub()
    p = Conn("p")
    positioned(hub, "news", p, 3)
    assert hub.remove("news", p) is True
    q = Conn("q")
    positioned(hub, "news", q, 10)  # a fresh channel: no gap from 3 to 10
    assert hub.broadcast("news", rec(11)) == (1, [])


def test_channel_counters() -> None:
    hub: Hub[Conn] = Hub()
    a, b, c, d = Conn("a"), Conn("b"), Conn("c"), Conn("d")
    live(hub, "news", a)
    live(hub, "news", b)
    live(hub, "sport", a)
    positioned(hub, "sport", d, 0)
    hub.add_pending("later", c, c.buffer)
    assert hub.channels() == {"news": 2, "sport": 2}
    assert hub.num_channels == 2
    assert hub.num_subscriptions == 4
    assert set(hub.subscribers("sport")) == {a, d}
    assert hub.positioned_channels() == ["sport"]


# ---------------------------------------------------------------- connections


def test_user_and_client_indexes() -> None:
    hub: Hub[Conn] = Hub()
    a1, a2, b, anon = Conn("a1"), Conn("a2"), Conn("b"), Conn("anon")
    hub.add_connection("c-a1", "alice", a1)
    hub.add_connection("c-a2", "alice", a2)
    hub.add_connection("c-b", "bob", b)
    hub.add_connection("c-anon", "", anon)
    assert hub.connection("c-a1") is a1
    assert hub.connection("missing") is None
    assert hub.user_connections("alice") == [a1, a2]
    assert hub.user_connections("nobody") == []
    assert hub.user_connections("") == [anon]
    assert hub.num_clients == 4
    assert hub.num_users == 3  # "" counts as a user (reference §5.3)
    assert set(hub.connections()) == {a1, a2, b, anon}

    hub.remove_connection("c-a1", "alice", a1)
    assert hub.user_connections("alice") == [a2]
    assert hub.connection("c-a1") is None
    hub.remove_connection("c-a2", "alice", a2)
    assert hub.user_connections("alice") == []
    assert hub.num_users == 2
    assert hub.num_clients == 2
    hub.remove_connection("c-a2", "alice", a2)  # twice is harmless
    hub.remove_connection("never", "ghost", Conn("g"))
    assert hub.num_clients == 2


# ---------------------------------------------------------------- properties

ops = st.lists(
    st.tuples(
        st.sampled_from(["pending", "activate", "remove", "publish"]),
        st.integers(0, 4),
        st.sampled_from(["a", "b", "c"]),
        st.booleans(),
    ),
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(ops)
def test_random_operations_keep_the_index_consistent(operations: list[tuple[str, int, str, bool]]) -> None:
    """Compare the hub with a plain model: who is pending, who is live, who wants join/leave."""
    hub: Hub[Conn] = Hub()
    conns = [Conn(str(i)) for i in range(5)]
    pending: dict[str, set[int]] = {}
    subs: dict[str, set[int]] = {}
    jl: dict[str, set[int]] = {}
    for op, i, channel, flag in operations:
        conn = conns[i]
        if op == "pending":
            first = not pending.get(channel) and not subs.get(channel)
            assert hub.add_pending(channel, conn, conn.buffer) is first
            pending.setdefault(channel, set()).add(i)
        elif op == "activate":
            hub.activate(channel, conn, JSON_SHAPE, conn.push, join_leave=flag)
            pending.get(channel, set()).discard(i)
            subs.setdefault(channel, set()).add(i)
            if flag:
                jl.setdefault(channel, set()).add(i)
        elif op == "remove":
            for index in (pending, subs, jl):
                index.get(channel, set()).discard(i)
            assert hub.remove(channel, conn) is (not pending.get(channel) and not subs.get(channel))
        else:
            before = [(len(c.pushed), len(c.buffered)) for c in conns]
            count, missed = hub.broadcast(channel, rec(1))
            assert (count, missed) == (len(subs.get(channel, ())), [])
            hub.broadcast_join_leave(channel, "join", b'{"user":"","client":""}')
            for k, c in enumerate(conns):
                pushed = (k in subs.get(channel, ())) + (k in jl.get(channel, ()))
                buffered = k in pending.get(channel, ())
                assert (len(c.pushed), len(c.buffered)) == (before[k][0] + pushed, before[k][1] + buffered)
        assert hub.channels() == {ch: len(s) for ch, s in subs.items() if s}
        for ch in "abc":
            assert hub.has_subscribers(ch) is bool(pending.get(ch) or subs.get(ch))
