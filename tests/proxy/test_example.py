"""examples/proxy_backend as a user runs it: log in with a form, connect without a token, chat."""

from __future__ import annotations

import http.client
import http.cookies
import subprocess
import sys
import urllib.parse
from collections.abc import Iterator

import pytest
from centrifuge import Client, ReplyError

from tests.conftest import ROOT, eventually, free_port
from tests.sdk.helpers import ClientRecorder, Recorder, new_client, subscribe_ready

RUN = ROOT / "examples" / "proxy_backend" / "run.py"


@pytest.fixture
def example() -> Iterator[tuple[int, int]]:
    port, backend_port = free_port(), free_port()
    process = subprocess.Popen(
        [sys.executable, str(RUN), "--port", str(port), "--backend-port", str(backend_port)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()  # printed once both listen
        assert line.startswith("open "), line
        yield port, backend_port
    finally:
        process.terminate()
        process.wait(timeout=10)
        if process.stdout is not None:
            process.stdout.close()


def _login(backend_port: int, user: str) -> str:
    """POST the login form; the session cookie the backend sets (what a browser would keep)."""
    conn = http.client.HTTPConnection("127.0.0.1", backend_port, timeout=5)
    try:
        body = urllib.parse.urlencode({"user": user, "password": user})
        conn.request("POST", "/login", body, {"Content-Type": "application/x-www-form-urlencoded"})
        resp = conn.getresponse()
        resp.read()
        assert resp.status == 303
        cookie = http.cookies.SimpleCookie(resp.getheader("Set-Cookie", ""))
        return cookie["session"].value
    finally:
        conn.close()


async def _disconnect(*clients: Client) -> None:
    """Disconnect and wait (bounded) for the SDK's background socket closes: the server is a
    subprocess that the fixture stops after the event loop is gone, so nothing else waits."""
    for client in clients:
        await client.disconnect()
    await eventually(lambda: not any(c._background_tasks for c in clients))


async def test_login_connect_chat_and_admin_room(example: tuple[int, int]) -> None:
    port, backend_port = example
    ws = f"ws://127.0.0.1:{port}/connection/websocket"
    alice = new_client(ws, headers={"Cookie": f"session={_login(backend_port, 'alice')}"})
    bob = new_client(ws, headers={"Cookie": f"session={_login(backend_port, 'bob')}"})
    await alice.connect()
    await bob.connect()
    assert (await bob.rpc("whoami", {})).data == {"user": "bob", "admin": False}
    rec = Recorder()
    await subscribe_ready(alice.new_subscription("chat:lobby", rec))
    bob_room = await subscribe_ready(bob.new_subscription("chat:lobby", Recorder()))
    await bob_room.publish({"text": "  hi all "})
    await eventually(lambda: rec.publications)
    message = rec.publications[0][1]
    assert (message["text"], message["by"]) == ("hi all", "bob")
    with pytest.raises(ReplyError) as empty:
        await bob_room.publish({"text": " "})
    assert empty.value.code == 400
    admins = Recorder()
    await bob.new_subscription("chat:admins", admins).subscribe()
    await eventually(lambda: admins.unsubscribed)
    assert admins.unsubscribed[0].code == 403
    assert (await alice.rpc("whoami", {})).data == {"user": "alice", "admin": True}  # from the connect meta
    await _disconnect(alice, bob)


async def test_without_a_session_the_backend_refuses(example: tuple[int, int]) -> None:
    port, _ = example
    events = ClientRecorder()
    client = new_client(f"ws://127.0.0.1:{port}/connection/websocket", events)
    await client.connect()
    await eventually(lambda: events.disconnected)
    assert (events.disconnected[-1].code, events.disconnected[-1].reason) == (4501, "not logged in")
    await _disconnect(client)
