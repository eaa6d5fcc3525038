"""The code in the README and docs/ runs as written.

Rules, checked for every fenced block of ``README.md`` and ``docs/**/*.md``:

- a block right after ``<!-- file: examples/x.py -->`` must be that file, verbatim; the files
  under ``examples/`` are run by the tests below (and by users), so the docs show code that runs;
- any other ``python`` block is run as it is (``python -c``, from the repository root): it must
  exit 0 and print no warning;
- every ``toml`` and ``json`` block is a configuration that ``load_settings`` accepts without a
  warning;
- in ``bash``/``sh`` blocks, ``trunkline <command>`` names a real command and ``make <target>`` a
  real Makefile target.

JavaScript blocks are not run here; the browser tests drive the same calls in Chromium.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import jwt
import pytest
from centrifuge import Client
from centrifuge.exceptions import ReplyError

from tests.conftest import ROOT, free_port
from trunkline.cli import main as cli
from trunkline.config import load_settings

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
FENCE = re.compile(r"^```(\w*)\s*$")
DEMO_SECRET = "trunkline-demo-secret-do-not-use-in-production"  # examples/demo.toml
MARKER = re.compile(r"<!--\s*file:\s*(\S+)\s*-->")


@dataclass(frozen=True)
class Block:
    doc: Path
    line: int
    lang: str
    text: str
    file: str | None

    @property
    def where(self) -> str:
        return f"{self.doc.relative_to(ROOT)}:{self.line}"


def blocks() -> list[Block]:
    found: list[Block] = []
    for doc in DOCS:
        lines = doc.read_text().splitlines()
        i = 0
        while i < len(lines):
            m = FENCE.match(lines[i])
            if not m or not m.group(1):
                i += 1
                continue
            start = i
            j = i + 1
            while j < len(lines) and lines[j].strip() != "```":
                j += 1
            before = next((lines[k] for k in range(start - 1, -1, -1) if lines[k].strip()), "")
            marker = MARKER.search(before)
            text = "\n".join(lines[start + 1 : j]) + "\n"
            found.append(Block(doc, start + 1, m.group(1), text, marker.group(1) if marker else None))
            i = j + 1
    return found


ALL = blocks()


def _ids(selected: list[Block]) -> list[str]:
    return [b.where for b in selected]


FILE_BLOCKS = [b for b in ALL if b.file]
PYTHON = [b for b in ALL if b.lang == "python" and not b.file]
CONFIGS = [b for b in ALL if b.lang in ("toml", "json") and not b.file]
SHELL = [b for b in ALL if b.lang in ("bash", "sh", "shell")]


def test_the_docs_have_blocks_of_each_kind() -> None:
    assert FILE_BLOCKS and CONFIGS and SHELL


@pytest.mark.parametrize("block", FILE_BLOCKS, ids=_ids(FILE_BLOCKS))
def test_included_file_is_verbatim(block: Block) -> None:
    assert block.file is not None
    path = ROOT / block.file
    assert path.is_file(), f"{block.where}: {block.file} does not exist"
    assert block.text.strip() == path.read_text().strip(), f"{block.where}: differs from {block.file}"


@pytest.mark.parametrize("block", PYTHON, ids=_ids(PYTHON))
def test_python_block_runs(block: Block) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRUNKLINE_")}
    result = subprocess.run(
        [sys.executable, "-W", "error", "-c", block.text],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert result.returncode == 0, f"{block.where}:\n{result.stderr[-2000:]}"
    assert "warning" not in result.stderr.lower(), f"{block.where}:\n{result.stderr[-2000:]}"


@pytest.mark.parametrize("block", CONFIGS, ids=_ids(CONFIGS))
def test_config_block_loads(block: Block, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / f"config.{block.lang}"
    path.write_text(block.text)
    with caplog.at_level(logging.WARNING):
        load_settings(str(path))
    warned = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert not warned, f"{block.where}: {warned}"


MAKE_TARGETS = set(re.findall(r"^([A-Za-z][\w-]*):", (ROOT / "Makefile").read_text(), re.M))


@pytest.mark.parametrize("block", SHELL, ids=_ids(SHELL))
def test_shell_block_names_real_commands(block: Block) -> None:
    for line in block.text.splitlines():
        for command in re.findall(r"(?:^|\s|/)trunkline\s+([a-z][\w-]*)", line.split("#")[0]):
            assert command in cli.commands, f"{block.where}: no command `trunkline {command}`"
        for target in re.findall(r"(?:^|[\s;&|(])make\s+([a-z][\w-]*)", line.split("#")[0]):
            assert target in MAKE_TARGETS, f"{block.where}: no make target `{target}`"


# --------------------------------------------------------------------------- the examples run


def _wait_port(port: int, proc: subprocess.Popen[str], deadline: float) -> None:
    while True:
        assert proc.poll() is None, proc.communicate()[0][-3000:]
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        assert time.monotonic() < deadline, "the server did not start listening"
        time.sleep(0.05)


@contextlib.contextmanager
def _running(args: list[str], port: int) -> Iterator[subprocess.Popen[str]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRUNKLINE_")}
    env["TRUNKLINE_HTTP_SERVER_PORT"] = str(port)
    env["TRUNKLINE_LOG_LEVEL"] = "warning"
    proc = subprocess.Popen(
        [sys.executable, *args], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        _wait_port(port, proc, time.monotonic() + 20)
        yield proc
    finally:
        if proc.stdout is not None and proc.poll() is not None:
            proc.stdout.close()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(15)
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
        if proc.stdout is not None:
            proc.stdout.close()


def test_client_example_against_the_demo_server() -> None:
    port = free_port()
    with _running(["-m", "trunkline", "serve", "--config", "examples/demo.toml"], port):
        result = subprocess.run(
            [sys.executable, "-W", "error", "examples/client.py", f"http://127.0.0.1:{port}"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "received {'text': 'hello'}" in result.stdout


async def test_embed_example_hooks_answer() -> None:
    port = free_port()
    token = jwt.encode({"sub": "7", "exp": int(time.time()) + 600}, DEMO_SECRET, algorithm="HS256")
    with _running(["examples/embed.py"], port) as proc:
        client = Client(f"ws://127.0.0.1:{port}/connection/websocket", token=token)
        await client.connect()
        await client.ready(5)
        result = await client.rpc("ping", {})
        assert result.data == {"pong": True}
        sub = client.new_subscription("chat:lobby")
        await sub.subscribe()
        await sub.ready(5)
        await sub.publish({"text": "fine"})
        with pytest.raises(ReplyError) as refused:
            await sub.publish({"text": "forbidden"})
        assert refused.value.code == 103
        await client.disconnect()
        await asyncio.sleep(0)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=15)
    assert proc.returncode == 0, out[-3000:]
    assert f"serving on port {port}" in out
    assert "Traceback" not in out
