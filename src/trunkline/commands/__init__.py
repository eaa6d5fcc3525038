"""The Centrifugo client protocol's commands: one handler per command, dispatched by name.

:func:`new_session` is the node's session factory for this protocol: it gives
each :class:`~trunkline.session.Session` this module's command table, so the
session never imports its handlers (and the node never imports the session).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import msgspec

from .. import errors as E
from ..events import MessageEvent, RPCEvent
from ..protocol.messages import Command, PingResult, Push, Reply, RPCResult, Subscribe, SubscribeRequest
from ..proxy import calls as proxied
from ..session import Session, State
from . import channel_ops, connecting
from .subscribing import announce, join_channel

if TYPE_CHECKING:
    from ..contracts import Transport
    from ..node import Control, Node

Handler = Callable[[Session, Command], Awaitable[None]]


async def _ping(s: Session, cmd: Command) -> None:
    s.reply(Reply(id=cmd.id, ping=PingResult()))


async def _rpc(s: Session, cmd: Command) -> None:
    req = cmd.rpc
    assert req is not None
    proxy = s.node.proxies.rpc(req.method)
    if proxy is not None:  # the method's namespace has the RPC proxy: the backend answers
        answer = await proxied.rpc(s, proxy, req.method, req.data)
        s.reply(Reply(id=cmd.id, rpc=RPCResult(msgspec.Raw(answer) if answer is not None else None)))
        return
    hook = s.node.hooks.rpc
    if hook is None:
        raise E.NOT_AVAILABLE()
    data = await hook(RPCEvent(s.view, req.method, bytes(req.data) if req.data else None))
    s.reply(Reply(id=cmd.id, rpc=RPCResult(msgspec.Raw(data) if data is not None else None)))


async def _send(s: Session, cmd: Command) -> None:
    req = cmd.send
    assert req is not None
    hook = s.node.hooks.message
    if hook is not None:
        await hook(MessageEvent(s.view, bytes(req.data) if req.data else None))


HANDLERS: dict[str, Handler] = {
    "connect": connecting.connect,
    "refresh": connecting.refresh,
    "subscribe": channel_ops.subscribe,
    "unsubscribe": channel_ops.unsubscribe,
    "publish": channel_ops.publish,
    "presence": channel_ops.presence,
    "presence_stats": channel_ops.presence_stats,
    "history": channel_ops.history,
    "sub_refresh": channel_ops.sub_refresh,
    "ping": _ping,
    "rpc": _rpc,
    "send": _send,
}


async def dispatch(s: Session, cmd: Command, method: str) -> None:
    """Run one command (``method`` is ``cmd.method``). Raises ClientError (reply error) or Disconnect (close)."""
    if s.state is State.CONNECTING and method != "connect":
        raise E.BAD_REQUEST_DISCONNECT.with_reason("bad request: connect first")
    if not method:
        s.handle_pong()
        return
    if cmd.id == 0 and method != "send":
        raise E.BAD_REQUEST_DISCONNECT.with_reason("bad request: command without id")
    await HANDLERS[method](s, cmd)


async def apply_control(s: Session, cmd: Control) -> None:
    """Apply a server API action to this connection."""
    if cmd.op == "disconnect":
        if s.client_id not in cmd.whitelist:
            await s.close(E.Disconnect(cmd.code or 3503, cmd.reason or "force disconnect"))
    elif cmd.op == "unsubscribe":
        await s.server_unsubscribe(cmd.channel, *E.UNSUBSCRIBE_SERVER)
    elif cmd.op == "subscribe":
        await _server_subscribe(s, cmd)
    elif cmd.op == "refresh":
        if cmd.expired:
            await s.close(E.CONNECTION_EXPIRED)
            return
        s.expire_at = cmd.expire_at or None
        if cmd.info:
            s.conn_info = bytes(cmd.info)
        s.schedule_expiry()


async def _server_subscribe(s: Session, cmd: Control) -> None:
    channel = cmd.channel
    opts = s.node.namespace_options(channel)
    if opts is None or channel in s.subscriptions or channel in s.pending:
        return
    result, finish = await join_channel(
        s,
        channel,
        opts,
        SubscribeRequest(channel=channel),
        server_side=True,
        chan_info=bytes(cmd.info) if cmd.info else None,
        data=bytes(cmd.data) if cmd.data else None,
    )
    pushed = Subscribe(
        recoverable=result.recoverable,
        epoch=result.epoch,
        offset=result.offset,
        positioned=result.positioned,
        data=result.data,
    )
    s.writer.push(s.codec.encode_push(Push(channel=channel, subscribe=pushed)))
    try:
        finish()
    except E.Disconnect as disconnect:
        await s.close(disconnect)
        return
    await announce(s, channel)


class _Table:
    """The command table a session dispatches through (see ``session.CommandTable``)."""

    __slots__ = ()

    # the module's functions themselves: a wrapper would be one more coroutine per command
    dispatch = staticmethod(dispatch)
    apply_control = staticmethod(apply_control)


TABLE = _Table()


def new_session(node: Node, transport: Transport, remote: str, headers: dict[str, str]) -> Session:
    """A Centrifugo-protocol session for a new connection (the node's ``session_factory``)."""
    return Session(node, transport, remote=remote, headers=headers, commands=TABLE)
