"""Hook decorators are typed: mypy rejects a hook with the wrong signature (issue 10 §3)."""

from __future__ import annotations

from pathlib import Path

from mypy import api

GOOD = """
from trunkline.events import ClientView, RPCEvent, SubscribeEvent, SubscribeReply
from trunkline.node import Node

node = Node()

@node.on_rpc
async def rpc(event: RPCEvent) -> bytes | None:
    return b"{}"

@node.on_subscribe
async def subscribe(event: SubscribeEvent) -> SubscribeReply | None:
    return None

@node.on_connect
async def connected(client: ClientView) -> None:
    return None
"""

BAD = """
from trunkline.events import RPCEvent
from trunkline.node import Node

node = Node()

@node.on_rpc
async def rpc(event: RPCEvent) -> str:  # must return bytes | None
    return "no"

@node.on_connect
def not_async(client: object) -> None:  # must be a coroutine function
    return None
"""


def check(tmp_path: Path, source: str) -> tuple[str, int]:
    path = tmp_path / "hooks.py"
    path.write_text(source)
    out, err, status = api.run(["--strict", "--no-incremental", "--cache-dir", str(tmp_path / ".mypy"), str(path)])
    return out + err, status


def test_well_typed_hooks_pass(tmp_path: Path) -> None:
    out, status = check(tmp_path, GOOD)
    assert status == 0, out


def test_wrong_hook_signatures_are_type_errors(tmp_path: Path) -> None:
    out, status = check(tmp_path, BAD)
    assert status == 1
    assert "on_rpc" in out and "on_connect" in out, out
