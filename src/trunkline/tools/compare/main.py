"""``trunkline compare``: the same workload through each delivery mode, then the sweeps.

One server for the whole comparison (ours, or ``--url``); each mode of each run uses
its own channel, so no mode sees another's publications. Output: a table on the
terminal, ``results.json`` and ``report.html`` in ``--out``.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final, TextIO

from .. import compare
from .clients import MODES
from .report import render_html, table
from .server import NAMESPACE, Server, pin, start
from .workload import Params, run_mode

SWEEPABLE: Final = ("rate", "clients")
QUICK: Final = Params(clients=5, rate=10, seconds=2, payload=100, interval=0.5, wait=25)


@dataclass
class Options:
    params: Params
    modes: tuple[str, ...] = MODES
    sweeps: dict[str, tuple[float, ...]] = field(default_factory=dict)
    sweep_seconds: float | None = None
    out: Path = Path("compare-results")
    url: str | None = None
    api_key: str = ""
    secret: str = ""
    server_pid: int | None = None
    channel_prefix: str = f"{NAMESPACE}:"
    quick: bool = False


def parse_sweep(text: str) -> tuple[str, tuple[float, ...]]:
    """``rate=1,10,100`` -> ``("rate", (1.0, 10.0, 100.0))``; ValueError if malformed."""
    name, sep, values = text.partition("=")
    name = name.strip()
    if not sep or name not in SWEEPABLE:
        raise ValueError(f"expected {' or '.join(n + '=V1,V2,…' for n in SWEEPABLE)}, got {text!r}")
    try:
        points = tuple(float(v) for v in values.split(",") if v.strip())
    except ValueError:
        raise ValueError(f"{name}: values must be numbers, got {values!r}") from None
    if not points or any(p <= 0 for p in points) or len(points) > 12:
        raise ValueError(f"{name}: 1 to 12 values above 0, got {values!r}")
    if name == "clients" and any(p != int(p) for p in points):
        raise ValueError("clients: whole numbers")
    return name, points


DEFAULT: Final = Params(clients=100, rate=10, seconds=10, payload=100, interval=1.0, wait=25)
QUICK_SWEEP_SECONDS: Final = 1.0


def from_cli(
    *,
    clients: int | None = None,
    rate: float | None = None,
    seconds: float | None = None,
    payload: int | None = None,
    interval: float | None = None,
    wait: float | None = None,
    modes: str = ",".join(MODES),
    sweep: tuple[str, ...] = (),
    sweep_seconds: float | None = None,
    out: str = "compare-results",
    quick: bool = False,
    url: str | None = None,
    api_key: str = "",
    secret: str = "",
    server_pid: int | None = None,
    channel_prefix: str = f"{NAMESPACE}:",
) -> Options:
    """Options from the command line; ValueError names what is wrong.

    ``--quick`` starts from small figures (5 clients, 10/s for 2 s, 0.5 s interval,
    1 s per sweep point); options given explicitly win over it.
    """
    base = QUICK if quick else DEFAULT
    params = Params(
        clients=clients if clients is not None else base.clients,
        rate=rate if rate is not None else base.rate,
        seconds=seconds if seconds is not None else base.seconds,
        payload=payload if payload is not None else base.payload,
        interval=interval if interval is not None else base.interval,
        wait=wait if wait is not None else base.wait,
    )
    chosen = tuple(m.strip() for m in modes.split(",") if m.strip())
    unknown = [m for m in chosen if m not in MODES]
    if unknown or not chosen:
        raise ValueError(f"--modes: choose from {', '.join(MODES)}; got {modes!r}")
    sweeps: dict[str, tuple[float, ...]] = {}
    for text in sweep:
        name, points = parse_sweep(text)
        if name in sweeps:
            raise ValueError(f"--sweep {name} given twice")
        sweeps[name] = points
    if url and not (api_key and secret):
        raise ValueError("--url needs --api-key (http_api.key) and --secret (client.token.hmac_secret_key)")
    if url and not url.startswith(("http://", "https://")):
        raise ValueError(f"--url must be an http:// or https:// URL, got {url!r}")
    if sweep_seconds is None and quick:
        sweep_seconds = QUICK_SWEEP_SECONDS
    return Options(
        params=params,
        modes=tuple(dict.fromkeys(chosen)),
        sweeps=sweeps,
        sweep_seconds=sweep_seconds,
        out=Path(out),
        url=url,
        api_key=api_key,
        secret=secret,
        server_pid=server_pid,
        channel_prefix=channel_prefix,
        quick=quick,
    )


class Progress:
    """A progress bar on a terminal; one line per step elsewhere."""

    def __init__(self, stream: TextIO, total: int) -> None:
        self.stream = stream
        self.total = max(total, 1)
        self.done = 0
        self.label = ""
        self.tty = stream.isatty()

    def step(self, label: str) -> Callable[[float], None]:
        self.label = label
        if not self.tty:
            print(f"[{self.done + 1}/{self.total}] {label}", file=self.stream, flush=True)

        def update(fraction: float) -> None:
            if not self.tty:
                return
            overall = (self.done + min(max(fraction, 0.0), 1.0)) / self.total
            filled = int(overall * 30)
            bar = "#" * filled + "-" * (30 - filled)
            line = f"\r[{bar}] {overall * 100:5.1f}%  {self.done + 1}/{self.total} {self.label}"
            self.stream.write(line[:120].ljust(100))
            self.stream.flush()

        return update

    def finish_step(self) -> None:
        self.done += 1

    def close(self) -> None:
        if self.tty:
            self.stream.write("\r" + " " * 110 + "\r")
            self.stream.flush()


def _setup(options: Options, server: Server) -> dict[str, Any]:
    import aiohttp

    from trunkline import __version__

    return {
        "trunkline": __version__,
        "python": platform.python_version(),
        "aiohttp": aiohttp.__version__,
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "server": options.url or "python -m trunkline serve (memory engine, started by compare)",
        "pinned": "server on CPU 0, load generator on CPU 1" if server.pinned else "not pinned",
        "server_cpu_measured": server.pid is not None,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "method": compare.__doc__.strip().splitlines()[0] if compare.__doc__ else "",
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


async def _run_all(options: Options, server: Server, progress: Progress) -> dict[str, Any]:
    stamp = int(time.time())
    n = 0

    async def measure(params: Params, label: str) -> dict[str, Any]:
        nonlocal n
        results: dict[str, Any] = {}
        for mode in options.modes:
            n += 1
            channel = f"{options.channel_prefix}r{stamp % 1000000}n{n}"
            update = progress.step(f"{label} {mode}")
            try:
                results[mode] = await run_mode(mode, server, params, channel, update)
            except Exception as exc:  # one mode failing must not lose the others' figures
                results[mode] = {"mode": mode, "error": f"{type(exc).__name__}: {exc}"}
            progress.finish_step()
            await asyncio.sleep(0.3)  # let the server close the mode's connections
        return results

    main = await measure(options.params, _label(options.params))
    sweeps: dict[str, list[dict[str, Any]]] = {}
    for name, points in options.sweeps.items():
        sweeps[name] = []
        for value in points:
            if name == "clients":
                params = replace(options.params, clients=int(value))
            else:
                params = replace(options.params, rate=value)
            if options.sweep_seconds is not None:
                params = replace(params, seconds=options.sweep_seconds)
            sweeps[name].append({"value": value, "modes": await measure(params, f"{name}={value:g}")})
    return {"run": {"params": _params(options.params), "modes": main}, "sweeps": sweeps}


def _label(p: Params) -> str:
    return f"{p.clients} clients, {p.rate:g}/s"


def _params(p: Params) -> dict[str, Any]:
    return {
        "clients": p.clients,
        "rate": p.rate,
        "seconds": p.seconds,
        "payload": p.payload,
        "interval": p.interval,
        "long_poll_wait": p.wait,
    }


def run(options: Options, stream: TextIO = sys.stderr, out: TextIO = sys.stdout) -> dict[str, Any]:
    """Run the comparison, write ``results.json`` and ``report.html``; return the results."""
    p = options.params
    history = max(1000, int(p.rate * p.seconds * 2), *(int(v * p.seconds * 2) for v in options.sweeps.get("rate", ())))
    if options.url:
        server = Server(options.url.rstrip("/"), options.secret, options.api_key, options.server_pid)
        server.pinned = options.server_pid is not None and pin(options.server_pid, 0) and pin(0, 1)
    else:
        server = start(history)
    steps = len(options.modes) * (1 + sum(len(v) for v in options.sweeps.values()))
    progress = Progress(stream, steps)
    try:
        setup = _setup(options, server)
        try:
            import uvloop

            measured = uvloop.run(_run_all(options, server, progress))
        except ImportError:  # pragma: no cover - uvloop is a dependency of trunkline
            measured = asyncio.run(_run_all(options, server, progress))
    finally:
        progress.close()
        server.stop()
    results = {"version": 1, "setup": setup, **measured}
    options.out.mkdir(parents=True, exist_ok=True)
    (options.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (options.out / "report.html").write_text(render_html(results))
    print(table(results), file=out)
    print(f"\nwrote {options.out / 'results.json'} and {options.out / 'report.html'}", file=out)
    return results
