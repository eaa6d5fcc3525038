"""The server under test: ``python -m trunkline serve`` on a free 127.0.0.1 port, or a running one.

The compare config turns on what the modes need (``poll``, ``uni_sse``) and one
namespace, ``compare``, with history (polling reads it) and subscribe/recovery
permissions for clients. CPU time is read from ``/proc/<pid>/stat`` (utime + stime).
On a machine with two or more CPUs the server is pinned to CPU 0 and the load
generator (this process) to CPU 1, so they do not compete for one core.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import jwt

NAMESPACE: Final = "compare"
_TICKS: Final = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def config(port: int, secret: str, api_key: str, history_size: int) -> dict[str, Any]:
    return {
        "http_server": {"address": "127.0.0.1", "port": port},
        "client": {"token": {"hmac_secret_key": secret}, "connection_limit": 0, "command_rate_limit": 0},
        "http_api": {"key": api_key},
        "log": {"level": "warning"},
        "uni_sse": {"enabled": True},
        "poll": {"enabled": True, "max_wait": "60s", "max_limit": 1000, "max_waiting": 1000000},
        "channel": {
            "namespaces": [
                {
                    "name": NAMESPACE,
                    "history_size": history_size,
                    "history_ttl": "900s",
                    "allow_subscribe_for_client": True,
                    "allow_recovery": True,
                }
            ]
        },
    }


def cpu_seconds(pid: int) -> float | None:
    """utime + stime of process ``pid`` (Linux), or None where /proc is not readable."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def own_cpu_seconds() -> float:
    """utime + stime of this process (the load generator), at microsecond resolution."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def pin(pid: int, cpu: int) -> bool:
    """Pin ``pid`` (0: this process) to one CPU when there are at least two; True if pinned."""
    if not hasattr(os, "sched_setaffinity") or (os.cpu_count() or 1) < 2:
        return False
    try:
        os.sched_setaffinity(pid, {cpu})
    except OSError:
        return False
    return True


@dataclass
class Server:
    """Where the clients go, the credentials they use, and the process to measure (if known)."""

    url: str
    secret: str
    api_key: str
    pid: int | None = None
    pinned: bool = False
    command: list[str] = field(default_factory=list)
    _proc: subprocess.Popen[bytes] | None = None
    _dir: tempfile.TemporaryDirectory[str] | None = None

    def token(self, user: str, channels: list[str] | None = None, ttl: int = 3600) -> str:
        claims: dict[str, Any] = {"sub": user, "exp": int(time.time()) + ttl}
        if channels:
            claims["channels"] = channels
        return jwt.encode(claims, self.secret, algorithm="HS256")

    def cpu(self) -> float | None:
        return cpu_seconds(self.pid) if self.pid is not None else None

    def log_tail(self, size: int = 2000) -> str:
        if self._dir is None:
            return ""
        path = Path(self._dir.name) / "server.log"
        return path.read_text(errors="replace")[-size:] if path.exists() else ""

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(5)
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None


def start(history_size: int, *, pin_cpus: bool = True, timeout: float = 20.0) -> Server:
    """Start a Trunkline server of our own and wait until it answers ``/health``."""
    port = free_port()
    secret, api_key = secrets.token_urlsafe(32), secrets.token_urlsafe(24)
    tmp = tempfile.TemporaryDirectory(prefix="trunkline-compare-")
    path = Path(tmp.name) / "trunkline.json"
    path.write_text(json.dumps(config(port, secret, api_key, history_size)))
    command = [sys.executable, "-m", "trunkline", "serve", "--config", str(path)]
    with (Path(tmp.name) / "server.log").open("wb") as log:
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    server = Server(f"http://127.0.0.1:{port}", secret, api_key, proc.pid, command=command, _proc=proc, _dir=tmp)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = server.log_tail()
            server.stop()
            raise RuntimeError(f"the server exited ({proc.returncode}):\n{tail}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            break
        time.sleep(0.05)
    else:
        server.stop()
        raise RuntimeError(f"the server did not listen on port {port} within {timeout:.0f}s")
    if pin_cpus:
        server.pinned = pin(proc.pid, 0) and pin(0, 1)
    return server
