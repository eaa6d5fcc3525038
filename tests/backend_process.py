"""A test's HTTP backend as a process of its own: ``python <script> <port>`` on 127.0.0.1."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.conftest import free_port


@contextmanager
def backend_process(script: Path, what: str) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """The base URL and the process of ``script`` once its ``/health`` answers (15 s at most,
    else RuntimeError naming ``what``); terminated on exit."""
    port = free_port()
    process = subprocess.Popen([sys.executable, str(script), str(port)], stdout=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 15
    try:
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError(f"{what} did not start") from None
                time.sleep(0.05)
        yield url, process
    finally:
        process.terminate()
        process.wait(timeout=10)
