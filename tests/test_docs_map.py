"""The map and shared-poll docs run as written, against a server started with their config.

``docs/map.md`` and ``docs/shared-poll.md`` mark the JavaScript blocks a reader can run with
``<!-- run: node -->``. This test starts ``trunkline serve --config`` (a subprocess) with the
configuration blocks of those docs merged into one file, a small backend on the docs' port 3001
stand-in (the refresh proxy and the ``/api/sign-poll`` endpoint, signing with the docs' own Python
function), makes the token as the docs say (``trunkline gentoken``), and runs each marked block in
Node with the pinned ``node_modules/centrifuge``. Only the URLs and the token are adapted, as the
docs tell the reader to. Every ``// prints: X`` comment of a block must be a line of its output
within the deadline. The documented configs pass ``trunkline checkconfig``; a typo in a map key is
refused naming the key and the file. The curl examples of the server API answer as documented.
"""

from __future__ import annotations

import json
import queue
import re
import subprocess
import sys
import threading
import time
import tomllib
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, Process, free_port

MAP_DOC = ROOT / "docs" / "map.md"
POLL_DOC = ROOT / "docs" / "shared-poll.md"
README = ROOT / "README.md"
RUN_MARKER = "<!-- run: node -->"
FENCE = re.compile(r"^```(\w*)\s*$")
PRINTS = re.compile(r"//\s*prints:\s*(.*?)\s*$")
DEADLINE = 10.0
API_KEY = "an-api-key"  # docs/map.md's [http_api] key

# What the refresh proxy knows (docs/shared-poll.md's example answer).
VOTES = {"post_123": {"votes": 42}, "post_456": {"votes": 7}}

PRELUDE = """
const { Centrifuge: Base } = require('centrifuge');
const WebSocket = require('ws');
class Centrifuge extends Base {
  constructor(endpoint, options) { super(endpoint, { websocket: WebSocket, ...options }); }
}
const token = process.env.TOKEN;
"""


def blocks(doc: Path) -> list[tuple[str, str, bool]]:
    """(language, code, marked runnable) of every fenced block of ``doc``."""
    out: list[tuple[str, str, bool]] = []
    lines = doc.read_text().splitlines()
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if m and m.group(1):
            before = [line.strip() for line in lines[max(0, i - 2) : i]]
            marked = before[-1:] == [RUN_MARKER] or before == [RUN_MARKER, ""]
            j = i + 1
            while not lines[j].startswith("```"):
                j += 1
            out.append((m.group(1), "\n".join(lines[i + 1 : j]) + "\n", marked))
            i = j
        i += 1
    return out


def readme_map_section() -> str:
    text = README.read_text()
    start = text.index("### Map subscriptions and shared poll")
    return text[start : text.index("\n### ", start + 10)]


def config_blocks() -> dict[str, dict[str, Any]]:
    """The configuration blocks of the map docs, by a name for the messages."""
    found: dict[str, dict[str, Any]] = {}
    for doc in (MAP_DOC, POLL_DOC):
        for n, (lang, code, _) in enumerate(blocks(doc)):
            if lang == "toml":
                found[f"{doc.name}#{n}"] = tomllib.loads(code)
            elif lang == "json":
                found[f"{doc.name}#{n}"] = json.loads(code)
    readme = readme_map_section()
    toml = readme[readme.index("```toml\n") + 8 :]
    found["README.md#map"] = tomllib.loads(toml[: toml.index("```")])
    return found


def served_config(backend_port: int) -> dict[str, Any]:
    """docs/map.md's TOML and JSON blocks and docs/shared-poll.md's TOML, in one file."""
    merged: dict[str, Any] = {}
    namespaces: list[dict[str, Any]] = []
    for name, cfg in config_blocks().items():
        if name.startswith("README"):
            continue  # its cursors namespace is map.md's with other TTLs; checked on its own below
        local = json.loads(json.dumps(cfg).replace("127.0.0.1:3001", f"127.0.0.1:{backend_port}"))
        namespaces += local.get("channel", {}).pop("namespaces", [])
        for key, value in local.items():
            if isinstance(value, dict):
                merged.setdefault(key, {}).update(value)
            else:
                merged[key] = value
    merged.setdefault("channel", {})["namespaces"] = namespaces
    return merged


def signature_function() -> Any:
    """``shared_poll_signature`` from docs/shared-poll.md's Python block."""
    code = next(c for lang, c, _ in blocks(POLL_DOC) if lang == "python" and "def shared_poll_signature" in c)
    scope: dict[str, Any] = {}
    exec(code.split("\n\nsignature = ")[0], scope)
    return scope["shared_poll_signature"]


class Backend(BaseHTTPRequestHandler):
    secret = ""
    sign: Any = None
    refreshes: list[dict[str, Any]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if self.path == "/centrifugo/refresh":
            self.refreshes.append(body)
            items = [{"key": i["key"], "data": VOTES[i["key"]]} for i in body["items"] if i["key"] in VOTES]
            answer: dict[str, Any] = {"result": {"items": items}}
        elif self.path == "/api/sign-poll":
            # A real backend checks its session; this one signs for the docs' user 42.
            keys = body["keys"]
            answer = {"keys": keys, "signature": self.sign(self.secret, "42", "post_votes:feed1", keys, 3600)}
        else:
            self.send_response(404)
            self.end_headers()
            return
        data = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class Docs:
    def __init__(self, server: Process, token: str, backend: type[Backend], backend_port: int) -> None:
        self.server = server
        self.backend_port = backend_port
        self.token = token
        self.backend = backend


@pytest.fixture(scope="module")
def docs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Docs]:
    tmp = tmp_path_factory.mktemp("docs_map")
    backend_port = free_port()
    config = served_config(backend_port)
    Backend.secret = config["shared_poll"]["hmac_secret_key"]
    Backend.sign = staticmethod(signature_function())
    Backend.refreshes = []
    httpd = ThreadingHTTPServer(("127.0.0.1", backend_port), Backend)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    path = tmp / "trunkline.json"
    path.write_text(json.dumps(config))
    server = Process(port=free_port(), config_path=path, log_path=tmp / "server.log")
    try:
        server.start()
        token = subprocess.run(
            [sys.executable, "-m", "trunkline", "gentoken", "--user", "42", "--config", str(path)],
            capture_output=True,
            text=True,
            check=True,
            timeout=20,
            cwd=ROOT,
        ).stdout.strip()
        yield Docs(server, token, Backend, backend_port)
    finally:
        server.stop()
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


def runnable(doc: Path) -> list[str]:
    return [code for lang, code, marked in blocks(doc) if marked and lang in ("js", "javascript")]


def run_node(code: str, docs: Docs) -> list[str]:
    """Run a marked block; return its output once every ``// prints:`` line came (or fail at the deadline)."""
    expected = [m.group(1) for line in code.splitlines() if (m := PRINTS.search(line))]
    assert expected, "a runnable block says what it prints"
    adapted = code.replace("ws://127.0.0.1:8000", docs.server.ws_url.removesuffix("/connection/websocket"))
    adapted = adapted.replace("127.0.0.1:3001", f"127.0.0.1:{docs.backend_port}")
    script = PRELUDE + "(async () => {\n" + adapted + "\n})().catch((e) => { console.log('FAILED', e); });\n"
    proc = subprocess.Popen(
        ["node", "-e", script],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin:/usr/local/bin", "TOKEN": docs.token},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line.rstrip("\n"))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    seen: list[str] = []
    missing = list(expected)
    deadline = time.monotonic() + DEADLINE
    try:
        while missing and time.monotonic() < deadline:
            try:
                line = lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                break
            seen.append(line)
            assert not line.startswith("FAILED"), seen
            if line in missing:
                missing.remove(line)
    finally:
        proc.kill()
        proc.wait(5)
        reader.join(5)
        assert proc.stdout is not None
        proc.stdout.close()
    assert not missing, f"never printed {missing}; output: {seen}"
    return seen


def test_docs_mark_their_runnable_blocks() -> None:
    # map.md: map presence and the client protocol; shared-poll.md: the client. Every JavaScript
    # block of the two docs is marked, so a new one is run too (or the marker is missing here).
    assert len(runnable(MAP_DOC)) == 2
    assert len(runnable(POLL_DOC)) == 1
    for doc in (MAP_DOC, POLL_DOC):
        js = [code for lang, code, _ in blocks(doc) if lang in ("js", "javascript")]
        assert js == runnable(doc), f"{doc.name}: a JavaScript block without {RUN_MARKER}"


@pytest.mark.parametrize("n", range(2))
def test_map_doc_javascript_runs(docs: Docs, n: int) -> None:
    run_node(runnable(MAP_DOC)[n], docs)


def test_shared_poll_doc_javascript_runs(docs: Docs) -> None:
    run_node(runnable(POLL_DOC)[0], docs)
    # The refresh proxy was asked as the doc describes: the channel and the tracked keys.
    asked = {item["key"] for call in docs.backend.refreshes for item in call["items"]}
    assert {c["channel"] for c in docs.backend.refreshes} == {"post_votes:feed1"}
    assert asked == {"post_123", "post_456"}


def api(docs: Docs, method: str, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(
        f"{docs.server.http_url}/api/{method}",
        data=json.dumps(body).encode(),
        headers={"X-API-Key": API_KEY},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=5) as resp:
        result: dict[str, Any] = json.loads(resp.read())
        return result


def curl_bodies() -> list[tuple[str, dict[str, Any]]]:
    """(method, body) of every curl of docs/map.md's server API block."""
    code = next(c for lang, c, _ in blocks(MAP_DOC) if lang == "bash" and "map_publish" in c)
    calls = re.findall(r"/api/(\w+).*?-d '(.*?)'", code, re.S)
    return [(method, json.loads(body)) for method, body in calls]


def test_map_doc_curl_examples(docs: Docs) -> None:
    calls = curl_bodies()
    assert [m for m, _ in calls] == ["map_publish", "map_read_state"]
    published = api(docs, *calls[0])
    assert published["result"]["offset"] == 1  # as the doc's comment: {"result":{"offset":1,"epoch":"..."}}
    assert published["result"]["epoch"]
    state = api(docs, *calls[1])["result"]
    assert [(e["key"], e["data"], e["score"]) for e in state["entries"]] == [("player1", {"name": "Ann"}, 1500)]
    assert state["cursor"] == ""
    # "limit: 0 (or absent) returns only the stream position"; "with key, ... whatever the limit".
    assert api(docs, "map_read_state", {"channel": "scores:main"})["result"]["entries"] == []
    one = api(docs, "map_read_state", {"channel": "scores:main", "key": "player1"})["result"]
    assert [e["key"] for e in one["entries"]] == ["player1"]


def checkconfig(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "trunkline", "checkconfig", str(path)],
        check=False,
        capture_output=True,
        text=True,
        timeout=20,
        cwd=ROOT,
    )


def test_documented_configs_pass_checkconfig(tmp_path: Path) -> None:
    configs = config_blocks()
    assert len(configs) == 4  # map.md TOML and JSON, shared-poll.md TOML, README's map section
    for name, cfg in configs.items():
        path = tmp_path / (name.replace("#", "_") + ".json")
        path.write_text(json.dumps(cfg))
        result = checkconfig(path)
        assert result.returncode == 0, (name, result.stderr)
        assert "warning" not in result.stderr.lower(), (name, result.stderr)


def test_a_typo_in_a_map_key_names_the_key_and_the_file(tmp_path: Path) -> None:
    code = next(c for lang, c, _ in blocks(MAP_DOC) if lang == "toml")
    assert 'key_ttl = "60s"' in code
    path = tmp_path / "typo.toml"
    path.write_text(code.replace('key_ttl = "60s"', 'key_tll = "60s"', 1))
    result = checkconfig(path)
    assert result.returncode == 2
    assert "channel.namespaces[0].map.key_tll: unknown key" in result.stderr
    assert "key_ttl" in result.stderr  # the suggestion
    assert str(path) in result.stderr


def test_shared_poll_doc_direct_publish_needs_versioned(docs: Docs) -> None:
    # The doc's curl against its own (versionless) post_votes namespace: "A `versionless`
    # namespace answers 107"; the doc's Authorization header is accepted as X-API-Key is.
    code = next(c for lang, c, _ in blocks(POLL_DOC) if lang == "bash" and "shared_poll_publish" in c)
    assert '-H "Authorization: apikey $API_KEY"' in code
    body = json.loads(re.findall(r"-d '(.*?)'", code, re.S)[0])
    request = urllib.request.Request(
        f"{docs.server.http_url}/api/shared_poll_publish",
        data=json.dumps(body).encode(),
        headers={"Authorization": f"apikey {API_KEY}"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=5) as resp:
        answer = json.loads(resp.read())
    assert answer["error"]["code"] == 107
    assert "versioned" in answer["error"]["message"]
