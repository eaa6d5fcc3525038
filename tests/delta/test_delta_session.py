"""Delta compression through a Session over the in-memory transport (JSON), no sockets.

Each client applies what it receives as centrifuge-python does (a JSON string: the
data itself when ``delta`` is false, a Fossil patch against its previous data when
true) and must end up with exactly the bytes that were published.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from centrifuge.fossil import apply_delta

from tests.conftest import make_settings
from tests.delta.helpers import NAMESPACES, document
from tests.manual_clock import ManualClock
from tests.test_session import Client, Harness, RecordingNode
from trunkline.commands import new_session
from trunkline.protocol import delta as delta_module
from trunkline.protocol import fossil


@pytest.fixture
async def h() -> AsyncIterator[Harness]:
    settings = make_settings({"client": {"ping_interval": "0s"}, "channel": {"namespaces": NAMESPACES}}, port=8000)
    node = RecordingNode(settings, clock=ManualClock())
    node.session_factory = new_session
    await node.start()
    node.spawned.clear()
    yield Harness(node, node.clock)  # type: ignore[arg-type]
    await node.shutdown(timeout=1)


class Applier:
    """What a delta-aware SDK does with the publications of one subscription."""

    def __init__(self) -> None:
        self.prev: bytes | None = None
        self.seen: list[bytes] = []
        self.kinds: list[str] = []

    def apply(self, pub: dict[str, Any]) -> None:
        assert isinstance(pub["data"], str), pub  # every publication of a delta subscription: a string
        raw = pub["data"].encode("utf-8")
        if pub.get("delta"):
            assert self.prev is not None, "a patch before any full publication"
            self.prev = apply_delta(self.prev, raw)
            self.kinds.append("patch")
        else:
            self.prev = raw
            self.kinds.append("full")
        self.seen.append(self.prev)


async def publish(h: Harness, channel: str, data: bytes, *, delta: bool = False) -> None:
    await h.node.publish(channel, data, delta=delta)


async def pubs(c: Client, channel: str, count: int) -> list[dict[str, Any]]:
    await c.transport.push("pub", channel, count=count)
    return [p["pub"] for p in c.transport.pushes("pub", channel)]


async def test_negotiated_stream_arrives_byte_for_byte_with_patches(h: Harness) -> None:
    c, _ = await h.connect("1")
    result = await c.ok("subscribe", {"channel": "delta:doc", "delta": "fossil"})
    assert result["delta"] is True
    versions = [document(i) for i in range(6)]
    for data in versions:
        await publish(h, "delta:doc", data)
    applier = Applier()
    for pub in await pubs(c, "delta:doc", len(versions)):
        applier.apply(pub)
    assert applier.seen == versions
    assert applier.kinds == ["full"] + ["patch"] * 5
    sent = sum(len(json.dumps(p["pub"]["data"])) for p in c.transport.pushes("pub", "delta:doc"))
    assert sent < sum(len(v) for v in versions) / 3


async def test_non_ascii_payloads_survive_the_json_string(h: Harness) -> None:
    c, _ = await h.connect("1")
    await c.ok("subscribe", {"channel": "delta:text", "delta": "fossil"})
    versions = [
        json.dumps(
            {"t": "grüße aus köln – ünïcødé €" * 20, "n": n, "e": "😀日本" * (n % 3)}, ensure_ascii=False
        ).encode()
        for n in range(8)
    ]
    for data in versions:
        await publish(h, "delta:text", data)
    applier = Applier()
    for pub in await pubs(c, "delta:text", len(versions)):
        applier.apply(pub)
    assert applier.seen == versions
    assert "patch" in applier.kinds


async def test_without_allowed_delta_types_no_delta(h: Harness) -> None:
    c, _ = await h.connect("1")
    result = await c.ok("subscribe", {"channel": "plain:doc", "delta": "fossil"})
    assert "delta" not in result
    await publish(h, "plain:doc", document(0), delta=True)
    [pub] = await pubs(c, "plain:doc", 1)
    assert pub["data"] == json.loads(document(0))  # plain JSON, not a string
    assert "delta" not in pub


async def test_delta_needs_a_positioned_subscription(h: Harness) -> None:
    c, _ = await h.connect("1")
    result = await c.ok("subscribe", {"channel": "deltanohistory:doc", "delta": "fossil"})
    assert "delta" not in result
    await publish(h, "deltanohistory:doc", document(1))
    [pub] = await pubs(c, "deltanohistory:doc", 1)
    assert pub["data"] == json.loads(document(1))


async def test_unknown_delta_type_closes_3501(h: Harness) -> None:
    c, _ = await h.connect("1")
    await c.send({"id": 1, "subscribe": {"channel": "delta:doc", "delta": "xdelta"}})
    code, reason = await c.transport.closed_with()
    assert code == 3501
    assert "delta" in reason


async def test_without_delta_publish_patches_only_when_the_publish_asks(h: Harness) -> None:
    c, _ = await h.connect("1")
    await c.ok("subscribe", {"channel": "deltaopt:doc", "delta": "fossil"})
    await publish(h, "deltaopt:doc", document(0))
    await publish(h, "deltaopt:doc", document(1))  # not asked: full, as a string
    await publish(h, "deltaopt:doc", document(2), delta=True)  # asked: a patch
    applier = Applier()
    for pub in await pubs(c, "deltaopt:doc", 3):
        applier.apply(pub)
    assert applier.kinds == ["full", "full", "patch"]
    assert applier.seen == [document(i) for i in range(3)]


async def test_a_patch_not_smaller_than_the_data_goes_full(h: Harness) -> None:
    c, _ = await h.connect("1")
    await c.ok("subscribe", {"channel": "delta:doc", "delta": "fossil"})
    versions = [b'{"a":1}', b'{"b":"completely different"}', b'{"b":"completely different"}']
    for data in versions:
        await publish(h, "delta:doc", data)
    applier = Applier()
    for pub in await pubs(c, "delta:doc", 3):
        applier.apply(pub)
    # nothing in common: the patch would be longer than the data, so it goes full; a repeat is a tiny copy
    assert applier.kinds == ["full", "full", "patch"]
    assert len(fossil.create(versions[0], versions[1])) >= len(versions[1])
    assert applier.seen == versions


async def test_a_new_subscriber_gets_a_full_one_while_others_get_the_patch(h: Harness) -> None:
    a, _ = await h.connect("1")
    await a.ok("subscribe", {"channel": "delta:doc", "delta": "fossil"})
    await publish(h, "delta:doc", document(0))
    await a.transport.push("pub", "delta:doc")
    b, _ = await h.connect("2")
    await b.ok("subscribe", {"channel": "delta:doc", "delta": "fossil"})
    await publish(h, "delta:doc", document(1))
    await publish(h, "delta:doc", document(2))
    pa, pb = Applier(), Applier()
    for pub in await pubs(a, "delta:doc", 3):
        pa.apply(pub)
    for pub in await pubs(b, "delta:doc", 2):
        pb.apply(pub)
    assert pa.kinds == ["full", "patch", "patch"]
    assert pb.kinds == ["full", "patch"]
    assert pb.seen == [document(1), document(2)]
    # one push line for both subscribers: the same patch bytes
    assert a.transport.pushes("pub", "delta:doc")[2] == b.transport.pushes("pub", "delta:doc")[1]


async def test_the_patch_is_computed_once_per_channel(h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real = fossil.create

    def counting(source: bytes, target: bytes) -> bytes:
        calls.append(len(target))
        return real(source, target)

    monkeypatch.setattr(delta_module.fossil, "create", counting)
    clients = [(await h.connect(str(i)))[0] for i in range(20)]
    for c in clients:
        await c.ok("subscribe", {"channel": "delta:doc", "delta": "fossil"})
    for i in range(5):
        await publish(h, "delta:doc", document(i))
    for c in clients:
        await c.transport.push("pub", "delta:doc", count=5)
    assert len(calls) == 4  # the first has no base; one patch per later publication, not per subscriber


async def test_recovery_chains_the_missed_publications(h: Harness) -> None:
    c, _ = await h.connect("1")
    first = await c.ok("subscribe", {"channel": "delta:doc", "delta": "fossil"})
    await publish(h, "delta:doc", document(0))
    await publish(h, "delta:doc", document(1))
    applier = Applier()
    for pub in await pubs(c, "delta:doc", 2):
        applier.apply(pub)
    await c.ok("unsubscribe", {"channel": "delta:doc"})
    for i in range(2, 7):
        await publish(h, "delta:doc", document(i))
    result = await c.ok(
        "subscribe", {"channel": "delta:doc", "delta": "fossil", "recover": True, "offset": 2, "epoch": first["epoch"]}
    )
    assert result["recovered"] is True
    assert result["delta"] is True
    recovered = Applier()
    for pub in result["publications"]:
        recovered.apply(pub)
    assert recovered.kinds == ["full", "patch", "patch", "patch", "patch"]
    assert recovered.seen == [document(i) for i in range(2, 7)]
    # the reply ended at the channel's position: the next live one may be a patch against it
    await publish(h, "delta:doc", document(7))
    [live] = (await pubs(c, "delta:doc", 3))[2:]
    recovered.apply(live)
    assert recovered.kinds[-1] == "patch"
    assert recovered.seen[-1] == document(7)


async def test_after_a_gap_the_client_resubscribes_and_recovers_without_a_wrong_patch(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    c, _ = await h.connect("1")
    first = await c.ok("subscribe", {"channel": "delta:doc", "delta": "fossil"})
    await publish(h, "delta:doc", document(0))
    applier = Applier()
    [pub] = await pubs(c, "delta:doc", 1)
    applier.apply(pub)
    # the node loses publication 2 on its way from the broker (a dropped pub/sub link)
    deliver = h.node.handle_publication
    monkeypatch.setattr(h.node, "handle_publication", lambda channel, record: None)
    await publish(h, "delta:doc", document(1))
    monkeypatch.setattr(h.node, "handle_publication", deliver)
    await publish(h, "delta:doc", document(2))  # offset 3 after 1: a gap, not delivered as a patch
    unsub = await c.transport.push("unsubscribe", "delta:doc")
    assert unsub["unsubscribe"]["code"] == 2500
    assert len(c.transport.pushes("pub", "delta:doc")) == 1
    await h.node.settle()
    result = await c.ok(
        "subscribe", {"channel": "delta:doc", "delta": "fossil", "recover": True, "offset": 1, "epoch": first["epoch"]}
    )
    assert result["recovered"] is True
    for pub in result["publications"]:
        applier.apply(pub)
    assert applier.kinds == ["full", "full", "patch"]  # the chain restarts full
    assert applier.seen == [document(0), document(1), document(2)]
