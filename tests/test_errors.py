"""The error constants are templates: every raise is a fresh copy, so no traceback (or frame) stays on them.

A constant such as ``E.UNKNOWN_CHANNEL`` is shared by every connection. Raising it
directly would store the raiser's traceback on the shared object (``__traceback__``)
and keep the raiser's frames, and everything they reference, alive until the next
raise; re-raising the same object even chains the new frames onto the old ones.
``E.UNKNOWN_CHANNEL()`` is a fresh, equal copy.
"""

from __future__ import annotations

import ast
import gc
import json
import weakref
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.conftest import ROOT, make_settings, token
from tests.manual_clock import ManualClock
from tests.memory_transport import MemoryTransport
from trunkline import errors as E
from trunkline.commands import new_session
from trunkline.commands.channel_ops import channel_options
from trunkline.node import Node
from trunkline.session import Session

CONSTANTS = {
    name: value
    for name, value in vars(E).items()
    if name.isupper() and isinstance(value, (E.ClientError, E.Disconnect))
}


class Conn:
    """One session over a memory transport, with numbered JSON commands."""

    def __init__(self, session: Session, transport: MemoryTransport) -> None:
        self.session = session
        self.transport = transport
        self._next_id = 0

    async def call(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        self._next_id += 1
        await self.session.handle_frame(json.dumps({"id": self._next_id, method: params}).encode())
        return await self.transport.reply(self._next_id)


@pytest.fixture
async def node() -> AsyncIterator[Node]:
    node = Node(make_settings({"client": {"ping_interval": "0s", "channel_limit": 1}}, port=8000), clock=ManualClock())
    node.session_factory = new_session
    await node.start()
    yield node
    await node.shutdown(timeout=1)


async def connected(node: Node) -> Conn:
    transport = MemoryTransport()
    session = node.new_session(transport, remote="memory")
    assert isinstance(session, Session)
    conn = Conn(session, transport)
    reply = await conn.call("connect", {"token": token("42")})
    assert "error" not in reply, reply
    return conn


class Local:
    """An object local to a raising frame; a weak reference to it tells whether that frame is still alive."""


# ---------------------------------------------------------------------- the copies


@pytest.mark.parametrize("name", sorted(CONSTANTS))
def test_calling_a_constant_gives_a_fresh_equal_copy(name: str) -> None:
    constant = CONSTANTS[name]
    copy = constant()
    assert copy is not constant
    assert copy is not constant()
    assert copy == constant and hash(copy) == hash(constant)
    assert type(copy) is type(constant)
    assert str(copy) == str(constant)
    if isinstance(constant, E.ClientError):
        assert isinstance(copy, E.ClientError)
        assert (copy.code, copy.message, copy.temporary) == (constant.code, constant.message, constant.temporary)
    else:
        assert isinstance(copy, E.Disconnect)
        assert (copy.code, copy.reason, copy.reconnect) == (constant.code, constant.reason, constant.reconnect)
    assert copy.__traceback__ is None


def test_no_raise_site_raises_a_constant_itself() -> None:
    """Every ``raise`` in src/trunkline of an error constant calls it (or uses with_message/with_reason)."""
    offenders = []
    for path in sorted((ROOT / "src" / "trunkline").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Raise) or node.exc is None:
                continue
            exc = node.exc
            name = exc.attr if isinstance(exc, ast.Attribute) else exc.id if isinstance(exc, ast.Name) else None
            if name in CONSTANTS:
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}: raise {ast.unparse(exc)}")
    assert offenders == []


# ---------------------------------------------------------------------- through a session


async def test_failed_subscribe_leaves_no_traceback_on_the_constant(node: Node) -> None:
    E.UNKNOWN_CHANNEL.__traceback__ = None  # whatever an earlier test in this process did
    conn = await connected(node)
    for _ in range(2):
        reply = await conn.call("subscribe", {"channel": "nosuchnamespace:room"})
        assert reply["error"] == {"code": E.UNKNOWN_CHANNEL.code, "message": E.UNKNOWN_CHANNEL.message}
    assert not conn.transport.closed
    assert E.UNKNOWN_CHANNEL.__traceback__ is None
    assert E.UNKNOWN_CHANNEL() is not E.UNKNOWN_CHANNEL
    assert E.UNKNOWN_CHANNEL() == E.UNKNOWN_CHANNEL


async def test_denied_publish_leaves_no_traceback_on_the_constant(node: Node) -> None:
    E.PERMISSION_DENIED.__traceback__ = None
    conn = await connected(node)
    reply = await conn.call("publish", {"channel": "smallhistory:room", "data": {"n": 1}})  # not subscribed
    assert reply["error"]["code"] == E.PERMISSION_DENIED.code
    assert E.PERMISSION_DENIED.__traceback__ is None
    assert E.PERMISSION_DENIED() is not E.PERMISSION_DENIED
    assert E.PERMISSION_DENIED() == E.PERMISSION_DENIED


async def test_disconnect_leaves_no_traceback_on_the_constant(node: Node) -> None:
    E.CHANNEL_LIMIT.__traceback__ = None
    conn = await connected(node)  # channel_limit is 1
    reply = await conn.call("subscribe", {"channel": "room"})
    assert "error" not in reply, reply
    await conn.session.handle_frame(json.dumps({"id": 99, "subscribe": {"channel": "other"}}).encode())
    assert await conn.transport.closed_with() == (E.CHANNEL_LIMIT.code, E.CHANNEL_LIMIT.reason)
    assert E.CHANNEL_LIMIT.__traceback__ is None
    assert E.CHANNEL_LIMIT() is not E.CHANNEL_LIMIT
    assert E.CHANNEL_LIMIT() == E.CHANNEL_LIMIT


# ---------------------------------------------------------------------- no frames kept alive


class Channel(str):
    """A channel name that can be weakly referenced: it lives in the raising function's frame."""

    __slots__ = ("__weakref__",)


async def test_raising_twice_from_a_real_raise_site_keeps_no_frame(node: Node) -> None:
    conn = await connected(node)
    refs = []
    for _ in range(2):
        channel = Channel("nosuchnamespace:room")
        refs.append(weakref.ref(channel))
        try:
            channel_options(conn.session, channel)  # raise E.UNKNOWN_CHANNEL(): `channel` is its local
        except E.ClientError as err:
            assert err == E.UNKNOWN_CHANNEL
            assert err is not E.UNKNOWN_CHANNEL
        del channel
    gc.collect()
    assert [ref() for ref in refs] == [None, None]
    assert E.UNKNOWN_CHANNEL.__traceback__ is None


def _raise(err: BaseException, refs: list[weakref.ref[Local]]) -> None:
    local = Local()
    refs.append(weakref.ref(local))
    raise err


def _raise_twice(template: E.ClientError, *, fresh: bool) -> list[weakref.ref[Local]]:
    refs: list[weakref.ref[Local]] = []
    for _ in range(2):
        try:
            _raise(template() if fresh else template, refs)
        except E.ClientError as err:
            assert err == template
    gc.collect()
    return refs


def test_raising_a_fresh_copy_twice_keeps_no_frame() -> None:
    template = E.ClientError(199, "test template")  # not a shared constant: this test leaves those alone
    refs = _raise_twice(template, fresh=True)
    assert [ref() for ref in refs] == [None, None]
    assert template.__traceback__ is None


def test_raising_the_template_itself_would_keep_both_frames() -> None:
    """The control: the weak references do see a kept frame (this is what the copies avoid)."""
    template = E.ClientError(199, "test template")
    refs = _raise_twice(template, fresh=False)
    assert all(ref() is not None for ref in refs)  # the second raise chained onto the first traceback
    assert template.__traceback__ is not None
    template.__traceback__ = None
    gc.collect()
    assert [ref() for ref in refs] == [None, None]
