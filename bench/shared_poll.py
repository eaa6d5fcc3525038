"""Shared poll (issue 14): backend requests/s and server CPU per cycle, 10 vs 1 000 clients.

    .venv/bin/python bench/shared_poll.py                         # 2 paired rounds, about 2 minutes
    .venv/bin/python bench/shared_poll.py --clients 10,1000 --keys 100 --seconds 10 --rounds 3

Per run, started fresh: the refresh backend (``tests/shared_poll/backend.py``, its own process),
a Trunkline server (``python -m trunkline serve``, ``taskset -c 0``) with one shared-poll namespace
(``refresh_interval`` 1 s, ``refresh_batch_size`` 1000), and a load process (``taskset -c 1``:
this script with ``--load``) that opens ``N`` WebSocket connections, subscribes each to
``bench:feed`` and tracks the same ``--keys`` keys (signed, Centrifugo's HMAC). Every second the
driver changes ``--changes`` of the keys at the backend. Measured over ``--seconds`` once every
client has every key: refresh calls and keys asked per second (from the backend's counters),
pushes received per second (from the load process), and the server's CPU (utime + stime from
/proc) per refresh cycle. Runs alternate the client counts within a round; ratios are medians of
the per-round (paired) ratios. The machine is shared: read the figures as ratios. Every process
started here is stopped in a ``finally``.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))

import run as runner  # noqa: E402  (bench/run.py: free_port, wait_listening, stop)

PY = runner.PY
BACKEND = ROOT / "tests" / "shared_poll" / "backend.py"
SECRET = "shared-poll-bench-secret-0123456789abcdef"
CHANNEL = "bench:feed"
INTERVAL = 1.0


def _config(backend: str, port: int) -> str:
    return f"""
[http_server]
port = {port}
[client]
insecure = true
[log]
level = "warning"
[shared_poll]
hmac_secret_key = "{SECRET}"
[channel.proxy.shared_poll_refresh]
endpoint = "{backend}/refresh"
timeout = "5s"
[[channel.namespaces]]
name = "bench"
subscription_type = "shared_poll"
allow_subscribe_for_client = true
[channel.namespaces.shared_poll]
refresh_interval = "{INTERVAL}s"
max_keys_per_connection = 10000
"""


def _sign(keys: list[str]) -> str:
    now = int(time.time())
    keys_hash = hashlib.sha256("\x00".join(keys).encode()).hexdigest()
    payload = f"{now}:0::{CHANNEL}:{keys_hash}"  # insecure connections have user ""; exp 0: never
    return f"{now}:0:{hmac.new(SECRET.encode(), payload.encode(), hashlib.sha256).hexdigest()}"


def _post(url: str, body: dict[str, Any]) -> None:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5):
        pass


def _get(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=5) as resp:
        found: dict[str, Any] = json.loads(resp.read())
    return found


def _cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# ------------------------------------------------------------------ the load process (--load)


async def _load(url: str, clients: int, keys: list[str], out: Path) -> None:
    import aiohttp

    signature = _sign(keys)
    track = {"channel": CHANNEL, "type": 1, "track": [{"signature": signature, "items": [{"key": k} for k in keys]}]}
    got = {"pushes": 0, "ready": 0}
    have: list[set[str]] = [set() for _ in range(clients)]

    async def one(i: int, session: aiohttp.ClientSession) -> None:
        async with session.ws_connect(url, max_msg_size=0) as ws:
            subscribe = {"id": 2, "subscribe": {"channel": CHANNEL, "type": 4}}
            await ws.send_str('{"id":1,"connect":{}}\n' + json.dumps(subscribe))
            await ws.send_str(json.dumps({"id": 3, "sub_refresh": track}))
            async for msg in ws:
                for line in msg.data.splitlines():
                    if not line:
                        continue
                    item = json.loads(line)
                    if not item:
                        await ws.send_str("{}")  # pong
                    elif "push" in item:
                        got["pushes"] += 1
                        if len(have[i]) < len(keys):
                            have[i].add(item["push"]["pub"]["key"])
                            got["ready"] += len(have[i]) == len(keys)
                    elif item.get("id") == 3:
                        for pub in item.get("sub_refresh", {}).get("items", []):
                            have[i].add(pub["key"])
                        got["ready"] += len(have[i]) == len(keys)

    async def report() -> None:
        while True:
            await asyncio.to_thread(out.write_text, json.dumps(got))
            await asyncio.sleep(0.2)

    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        tasks = []
        reporter = asyncio.ensure_future(report())
        for i in range(clients):
            tasks.append(asyncio.ensure_future(one(i, session)))
            if i % 100 == 99:
                await asyncio.sleep(0.05)
        try:
            await asyncio.gather(*tasks)
        finally:
            reporter.cancel()


# ------------------------------------------------------------------ one measured run


def run_one(clients: int, n_keys: int, changes: int, seconds: float) -> dict[str, float]:
    keys = [f"item{i}" for i in range(n_keys)]
    procs: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory() as tmp:
        try:
            bport, sport = runner.free_port(), runner.free_port()
            backend_url = f"http://127.0.0.1:{bport}"
            backend = subprocess.Popen([PY, str(BACKEND), str(bport)], start_new_session=True)
            procs.append(backend)
            config = Path(tmp) / "trunkline.toml"
            config.write_text(_config(backend_url, sport))
            server = subprocess.Popen(
                ["taskset", "-c", "0", PY, "-m", "trunkline", "serve", "--config", str(config)],
                cwd=ROOT,
                start_new_session=True,
            )
            procs.append(server)
            if not runner.wait_listening(sport, server):
                raise RuntimeError("the server did not start")
            deadline = time.monotonic() + 10
            while True:
                try:
                    _get(f"{backend_url}/stats")
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise RuntimeError("the backend did not start") from None
                    time.sleep(0.05)
            for key in keys:
                _post(f"{backend_url}/set", {"channel": CHANNEL, "key": key, "data": {"key": key, "n": 0}})
            out = Path(tmp) / "load.json"
            load = subprocess.Popen(
                [
                    "taskset",
                    "-c",
                    "1",
                    PY,
                    __file__,
                    "--load",
                    f"ws://127.0.0.1:{sport}/connection/websocket",
                    "--clients",
                    str(clients),
                    "--keys",
                    str(n_keys),
                    "--out",
                    str(out),
                ],
                start_new_session=True,
            )
            procs.append(load)

            def state() -> dict[str, int]:
                try:
                    found: dict[str, int] = json.loads(out.read_text())
                    return found
                except (OSError, ValueError):
                    return {"pushes": 0, "ready": 0}

            deadline = time.monotonic() + 60
            while state()["ready"] < clients:
                if time.monotonic() > deadline or load.poll() is not None:
                    raise RuntimeError(f"clients not ready: {state()}")
                time.sleep(0.1)
            _post(f"{backend_url}/reset", {})
            cpu0, pushes0, t0 = _cpu(server.pid), state()["pushes"], time.monotonic()
            n = 0
            while time.monotonic() - t0 < seconds:  # change `changes` keys a second
                n += 1
                for key in keys[(n * changes) % n_keys :][:changes]:
                    _post(f"{backend_url}/set", {"channel": CHANNEL, "key": key, "data": {"key": key, "n": n}})
                time.sleep(max(0.0, t0 + n * INTERVAL - time.monotonic()))
            elapsed = time.monotonic() - t0
            cpu = _cpu(server.pid) - cpu0
            pushes = state()["pushes"] - pushes0
            stats = _get(f"{backend_url}/stats")
            calls = stats["calls"].get("/refresh", {}).get(CHANNEL, 0)
            asked = stats["keys"].get("/refresh", {}).get(CHANNEL, 0)
            cycles = elapsed / INTERVAL
            return {
                "clients": clients,
                "requests_per_s": calls / elapsed,
                "keys_per_s": asked / elapsed,
                "pushes_per_s": pushes / elapsed,
                "cpu_ms_per_cycle": 1000 * cpu / cycles,
                "cpu_us_per_push": 1e6 * cpu / pushes if pushes else 0.0,
            }
        finally:
            for proc in reversed(procs):
                runner.stop(proc)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", default="10,1000")
    ap.add_argument("--keys", type=int, default=100)
    ap.add_argument("--changes", type=int, default=10, help="keys changed at the backend per second")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--load", default="", help=argparse.SUPPRESS)
    ap.add_argument("--out", default="", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.load:
        asyncio.run(_load(args.load, int(args.clients), [f"item{i}" for i in range(args.keys)], Path(args.out)))
        return 0
    counts = [int(c) for c in args.clients.split(",")]
    rows: dict[int, list[dict[str, float]]] = {c: [] for c in counts}
    for r in range(args.rounds):
        order = counts if r % 2 == 0 else list(reversed(counts))
        for clients in order:
            row = run_one(clients, args.keys, args.changes, args.seconds)
            rows[clients].append(row)
            print(json.dumps({"round": r, **{k: round(v, 3) for k, v in row.items()}}), flush=True)
    print(f"\n{args.keys} keys tracked by every client, {args.changes} changed a second, interval {INTERVAL:g}s")
    print("| clients | backend requests/s | keys asked/s | pushes/s | server CPU ms/cycle | CPU us/push |")
    print("|---|---|---|---|---|---|")
    for clients in counts:
        med = {k: statistics.median(r[k] for r in rows[clients]) for k in rows[clients][0]}
        print(
            f"| {clients} | {med['requests_per_s']:.2f} | {med['keys_per_s']:.0f} | {med['pushes_per_s']:.0f}"
            f" | {med['cpu_ms_per_cycle']:.1f} | {med['cpu_us_per_push']:.1f} |"
        )
    if len(counts) == 2:
        a, b = counts
        ratios = [y["requests_per_s"] / x["requests_per_s"] for x, y in zip(rows[a], rows[b], strict=True)]
        print(f"\nbackend requests/s, {b} vs {a} clients (median of paired rounds): {statistics.median(ratios):.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
