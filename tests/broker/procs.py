"""Server processes of the broker tests: free loopback ports, waiting for a start, stopping by PID."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def came_up(process: subprocess.Popen[bytes], answers: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Poll ``answers`` until it holds (True), or the process exits or ``timeout`` passes (False)."""
    deadline = time.monotonic() + timeout
    while not answers():
        if process.poll() is not None or time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def stop_process(process: subprocess.Popen[bytes] | None) -> None:
    """SIGTERM, then SIGKILL when it has not exited within 10 s; None is nothing to stop."""
    if process is None:
        return
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
