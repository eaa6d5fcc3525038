"""Running an example as a user does: its runner as a subprocess, stopped by PID at teardown.

``Example.start(script, *args)`` starts ``python examples/<name>/<script> args`` in its own
process group with its output in a log file; ``wait_http`` polls a URL until it answers 200
(or the process exits, or the deadline passes).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp

from tests.conftest import ROOT


class Example:
    """One example's runner process."""

    def __init__(self, tmp: Path, name: str) -> None:
        self.dir = ROOT / "examples" / name
        self.log = tmp / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, script: str, *argv: str) -> subprocess.Popen[bytes]:
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, str(self.dir / script), *argv],
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self.proc

    def stop(self, sig: int = signal.SIGTERM) -> int | None:
        """Signal the runner's process group and wait for it (SIGKILL after 10 s)."""
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
        return proc.returncode

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:] if self.log.exists() else ""

    async def wait_http(self, url: str, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as http:
            while time.monotonic() < deadline:
                assert self.proc is not None and self.proc.poll() is None, f"runner exited:\n{self.output()}"
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(url) as r:
                        if r.status == 200:
                            return
                await asyncio.sleep(0.1)
        raise AssertionError(f"{url} did not answer within {timeout}s:\n{self.output()}")


def percentile(samples: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``samples``, nearest rank."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]
