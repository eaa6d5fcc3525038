"""The notifications example's runner: Trunkline and the application backend, two processes.

    .venv/bin/python examples/notifications/run.py      # what `make example-notifications` runs

It starts ``trunkline serve --config examples/notifications/trunkline.toml`` (port 8001) and
``backend.py`` (port 8081, the page, sign-in, tokens and notifications), waits until both
answer, prints the URL, and stops both on Ctrl-C or SIGTERM (or when either exits).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import time
from pathlib import Path

import aiohttp

HERE = Path(__file__).resolve().parent
START_TIMEOUT = 20.0  # seconds for each process to answer


async def wait_ready(url: str, proc: asyncio.subprocess.Process) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:
        while time.monotonic() < deadline:
            if proc.returncode is not None:
                raise SystemExit(f"{url}: the process exited with {proc.returncode}")
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with http.get(url) as resp:
                    if resp.status < 500:
                        return
            await asyncio.sleep(0.1)
    raise SystemExit(f"{url} did not answer within {START_TIMEOUT:.0f} s")


async def stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            proc.kill()
            await proc.wait()


async def main(a: argparse.Namespace) -> int:
    trunkline_url = f"http://127.0.0.1:{a.port}"
    done = asyncio.Event()  # set by Ctrl-C / SIGTERM (acted on once both processes are up)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, done.set)
    server = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "trunkline", "serve", "--config", a.config, "--port", str(a.port)
    )
    procs = [server]
    try:
        await wait_ready(f"{trunkline_url}/health", server)
        backend = await asyncio.create_subprocess_exec(
            sys.executable,
            str(HERE / "backend.py"),
            *("--config", a.config, "--trunkline", trunkline_url, "--port", str(a.page_port)),
        )
        procs.append(backend)
        await wait_ready(f"http://127.0.0.1:{a.page_port}/me", backend)
        print(f"notifications: http://127.0.0.1:{a.page_port}/  (Trunkline on port {a.port})", flush=True)
        waiters = [asyncio.ensure_future(p.wait()) for p in procs]
        signalled = asyncio.ensure_future(done.wait())
        await asyncio.wait([*waiters, signalled], return_when=asyncio.FIRST_COMPLETED)
        for w in [*waiters, signalled]:
            w.cancel()
        return 0 if done.is_set() else 1
    finally:
        for proc in reversed(procs):
            await stop(proc)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=str(HERE / "trunkline.toml"))
    p.add_argument("--port", type=int, default=8001, help="Trunkline's port")
    p.add_argument("--page-port", type=int, default=8081, help="the backend's (and the page's) port")
    sys.exit(asyncio.run(main(p.parse_args())))
