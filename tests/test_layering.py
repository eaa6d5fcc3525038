"""The dependency rule: imports point inward only (docs/architecture.md).

Every module of ``src/trunkline`` gets a layer; a module may import its own layer or
lower ones, never a higher one — also not lazily inside a function, and also not
under ``TYPE_CHECKING``. The node, the session and the Centrifugo commands are three
layers: the node types its connections against ``trunkline.contracts`` and gets its
session factory injected; the session gets its command table injected.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src" / "trunkline"

# Lower number = more inward. Longest matching prefix wins.
LAYERS: dict[str, int] = {
    "trunkline": 0,  # __init__: the version
    "trunkline.errors": 0,
    "trunkline.durations": 0,
    "trunkline.config": 0,
    "trunkline.records": 0,  # neutral publication records (broker, hub and every wire format)
    "trunkline.clock": 0,
    "trunkline.compat": 0,  # Centrifugo options Trunkline lacks (for the config loader's answers)
    "trunkline.protocol": 1,
    "trunkline.mqtt": 1,  # sans-I/O MQTT cores: codec, topic <-> channel mapping, filter matching
    "trunkline.mqtt.retained": 2,  # the retained-message store (memory, Redis): a broker-level service
    "trunkline.mqtt.session": 5,  # an MQTT client session on the node's engine API (as commands are for Centrifugo)
    "trunkline.mqtt.listener": 6,  # MQTT over WebSocket (/mqtt) and TCP/TLS listeners
    "trunkline.hub": 2,
    "trunkline.auth": 2,
    "trunkline.broker": 2,
    "trunkline.broker.map_base": 2,  # the map broker contract (keyed state + stream), beside broker.base
    "trunkline.hub.map_options": 2,  # a map namespace's settings resolved into MapOptions and page limits
    "trunkline.events": 2,
    "trunkline.observe.metrics": 2,
    "trunkline.transport.writer": 2,  # the outbound buffer sessions own; imports nothing of ours
    "trunkline.transport.per_owner": 2,  # state kept per node or loop (the writer's flushers among it)
    "trunkline.proxy": 2,  # the HTTP proxy to the application backend: wire format, endpoints (no session)
    "trunkline.proxy.calls": 5,  # asks the backend on behalf of a client command (knows the session)
    "trunkline.contracts": 2,  # Protocols between the layers (transport, connection, session factory)
    "trunkline.node": 3,
    "trunkline.appkeys": 3,
    "trunkline.session": 4,
    "trunkline.commands": 5,
    "trunkline.transport": 6,
    "trunkline.api": 6,
    "trunkline.observe": 6,
    "trunkline.web": 6,
    "trunkline.app": 7,
    "trunkline.cli": 8,
    "trunkline.workers": 8,  # trunkline serve --workers N: the supervisor and its worker processes
    "trunkline.tools": 8,  # trunkline compare: load clients and reports, beside the CLI
    "trunkline.__main__": 8,
}


def layer_of(module: str) -> int:
    best = ""
    for prefix in LAYERS:
        if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > len(best):
            best = prefix
    assert best, f"no layer for {module}"
    return LAYERS[best]


def module_name(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path, module: str) -> list[tuple[str, bool]]:
    """(imported module, type-checking only) for every trunkline import in ``path``."""
    tree = ast.parse(path.read_text())
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    type_only: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in ast.walk(node):
                type_only.add(id(child))
    found: list[tuple[str, bool]] = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            names = [target]
            # "from . import x" / "from .pkg import mod": the imported names may be modules
            names += [
                f"{target}.{a.name}"
                for a in node.names
                if (SRC.parent / f"{target}.{a.name}".replace(".", "/")).with_suffix(".py").exists()
            ]
        for name in names:
            if name == "trunkline" or name.startswith("trunkline."):
                found.append((name, id(node) in type_only))
    return found


MODULES = sorted(SRC.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(SRC)))
def test_imports_point_inward(path: Path) -> None:
    module = module_name(path)
    own = layer_of(module)
    for imported, type_only in imports(path, module):
        kind = "type-only " if type_only else ""
        assert layer_of(imported) <= own, (
            f"{module} (layer {own}) {kind}imports {imported} (layer {layer_of(imported)})"
        )


def test_protocol_core_is_free_of_io() -> None:
    for path in (SRC / "protocol").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
                assert not any(n.split(".")[0] in {"asyncio", "socket", "aiohttp", "time", "redis"} for n in names), (
                    f"{path.name} imports I/O or a clock: {names}"
                )
            assert not isinstance(node, ast.AsyncFunctionDef | ast.Await), f"{path.name} has async code"
