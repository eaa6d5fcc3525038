"""The in-process index: subscribers, pending subscribers, join/leave, user and client lookups."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from trunkline.hub.registry import Hub
from trunkline.protocol.codec import encode_publication_push
from trunkline.protocol.messages import Publication

PUB = b'{"data":{"n":1},"offset":1}'


@dataclass(eq=False)
class Conn:
    """Stands in for a session: records what its writer would receive."""

    name: str
    pushed: list[bytes] = field(default_factory=list)
    buffered: list[tuple[int, bytes]] = field(default_factory=list)

    def push(self, data: bytes) -> None:
        self.pushed.append(data)

    def buffer(self, offset: int, data: bytes) -> None:
        self.buffered.append((offset, data))


def live(hub: Hub[Conn], channel: str, conn: Conn, join_leave: bool = False) -> None:
    hub.add_pending(channel, conn, conn.buffer)
    hub.activate(channel, conn, conn.push, join_leave)


# ---------------------------------------------------------------- pending -> live


def test_pending_subscriber_gets_publications_through_its_buffer() -> None:
    hub: Hub[Conn] = Hub()
    a = Conn("a")
    assert hub.add_pending("news", a, a.buffer) is True
    assert hub.has_subscribers("news")
    assert hub.subscribers("news") == []
    assert hub.broadcast_publication("news", PUB, 1) == 0  # counts live subscribers only
    assert a.pushed == []
    assert len(a.buffered) == 1
    offset, data = a.buffered[0]
    assert offset == 1
    assert json.loads(data) == {"push": {"channel": "news", "pub": {"data": {"n": 1}, "offset": 1}}}


def test_activate_switches_from_buffer_to_push_in_order() -> None:
    hub: Hub[Conn] = Hub()
    a = Conn("a")
    hub.add_pending("news", a, a.buffer)
    hub.broadcast_publication("news", b'{"data":1,"offset":1}', 1)
    hub.activate("news", a, a.push, join_leave=False)
    hub.broadcast_publication("news", b'{"data":2,"offset":2}', 2)
    hub.broadcast_publication("news", b'{"data":3,"offset":3}', 3)
    assert [o for o, _ in a.buffered] == [1]
    assert [json.loads(d)["push"]["pub"]["offset"] for d in a.pushed] == [2, 3]
    assert hub.subscribers("news") == [a]


def test_add_pending_reports_a_new_channel_only_once() -> None:
    hub: Hub[Conn] = Hub()
    a, b, c = Conn("a"), Conn("b"), Conn("c")
    assert hub.add_pending("news", a, a.buffer) is True
    assert hub.add_pending("news", b, b.buffer) is False
    hub.activate("news", a, a.push, False)
    assert hub.add_pending("news", c, c.buffer) is False
    assert hub.add_pending("other", c, c.buffer) is True


def test_live_and_pending_subscribers_in_the_same_channel() -> None:
    hub: Hub[Conn] = Hub()
    a, b = Conn("a"), Conn("b")
    live(hub, "news", a)
    hub.add_pending("news", b, b.buffer)
    assert hub.broadcast_publication("news", PUB, 1) == 1
    assert len(a.pushed) == 1
    assert len(b.buffered) == 1
    assert a.pushed[0] is b.buffered[0][1]


# ---------------------------------------------------------------- fan-out


def test_fan_out_writes_the_same_bytes_object_to_every_subscriber() -> None:
    hub: Hub[Conn] = Hub()
    conns = [Conn(str(i)) for i in range(50)]
    for conn in conns:
        live(hub, "news", conn)
    assert hub.broadcast_publication("news", PUB, 1) == 50
    first = conns[0].pushed[0]
    assert all(len(c.pushed) == 1 and c.pushed[0] is first for c in conns)


def test_fan_out_bytes_equal_the_codec_encoding() -> None:
    hub: Hub[Conn] = Hub()
    a = Conn("a")
    live(hub, "chat:room", a)
    pub = Publication(data=msgspec.Raw(b'{"t":"hi"}'), offset=5)
    hub.broadcast_publication("chat:room", msgspec.json.encode(pub), 5)
    assert a.pushed == [encode_publication_push("chat:room", pub)]


def test_fan_out_only_reaches_the_channel() -> None:
    hub: Hub[Conn] = Hub()
    a, b = Conn("a"), Conn("b")
    live(hub, "news", a)
    live(hub, "sport", b)
    assert hub.broadcast_publication("news", PUB, 1) == 1
    assert hub.broadcast_publication("nobody", PUB, 1) == 0
    assert len(a.pushed) == 1
    assert b.pushed == []


def test_channel_names_are_escaped() -> None:
    hub: Hub[Conn] = Hub()
    a = Conn("a")
    channel = 'we"ird\n\\chan\u2028é'
    live(hub, channel, a, join_leave=True)
    hub.broadcast_publication(channel, PUB, 1)
    hub.broadcast_join_leave(channel, "join", b'{"user":"1","client":"c"}')
    for data in a.pushed:
        assert b"\n" not in data
        assert json.loads(data)["push"]["channel"] == channel


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
    assert hub.broadcast_publication("news", PUB, 1) == 0
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
    hub.broadcast_publication("news", PUB, 1)
    assert a.buffered == []


def test_remove_of_an_unknown_subscriber_is_harmless() -> None:
    hub: Hub[Conn] = Hub()
    a, b = Conn("a"), Conn("b")
    assert hub.remove("news", a) is True
    live(hub, "news", a)
    assert hub.remove("news", b) is False
    assert hub.subscribers("news") == [a]


def test_channel_counters() -> None:
    hub: Hub[Conn] = Hub()
    a, b, c = Conn("a"), Conn("b"), Conn("c")
    live(hub, "news", a)
    live(hub, "news", b)
    live(hub, "sport", a)
    hub.add_pending("later", c, c.buffer)
    assert hub.channels() == {"news": 2, "sport": 1}
    assert hub.num_channels == 2
    assert hub.num_subscriptions == 3


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
            hub.activate(channel, conn, conn.push, flag)
            pending.get(channel, set()).discard(i)
            subs.setdefault(channel, set()).add(i)
            if flag:
                jl.setdefault(channel, set()).add(i)
        elif op == "remove":
            for index in (pending, subs, jl):
                index.get(channel, set()).discard(i)
            assert hub.remove(channel, conn) is (not pending.get(channel) and not subs.get(channel))
        else:
            before: list[Any] = [(len(c.pushed), len(c.buffered)) for c in conns]
            count = hub.broadcast_publication(channel, PUB, 1)
            assert count == len(subs.get(channel, ()))
            hub.broadcast_join_leave(channel, "join", b'{"user":"","client":""}')
            for k, c in enumerate(conns):
                pushed = (k in subs.get(channel, ())) + (k in jl.get(channel, ()))
                buffered = k in pending.get(channel, ())
                assert (len(c.pushed), len(c.buffered)) == (before[k][0] + pushed, before[k][1] + buffered)
        assert hub.channels() == {ch: len(s) for ch, s in subs.items() if s}
        for ch in "abc":
            assert hub.has_subscribers(ch) is bool(pending.get(ch) or subs.get(ch))
