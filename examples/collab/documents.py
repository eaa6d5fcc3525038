"""The server's copy of every room's Yjs document (pycrdt), and what the page sends: parsed here.

No sockets and no Trunkline in this module: ``run.py``'s hooks call it, and
``tests/examples/test_collab.py`` runs hypothesis against the parsers. Parsers take bytes off
the wire and return clean values or raise ``ValueError`` with a message fit for the client.

Wire format (JSON, the page's centrifuge-js speaks the JSON protocol):

- a publication on ``doc:<room>``: ``{"u": "<base64 Yjs update>"}``
- the RPC ``sync``: ``{"room": "<room>", "sv": "<base64 state vector>"}``, answered with
  ``{"update": "<base64 diff>", "sv": "<base64 of the server's state vector>"}``
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
from pathlib import Path

from pycrdt import Doc

ROOM = re.compile(r"[a-z0-9][a-z0-9-]{0,31}")
MAX_UPDATE = 32 * 1024  # bytes of one decoded update (a paste of a few pages)
MAX_DOCUMENT = 2 * 1024 * 1024  # bytes of a room's encoded state
MAX_ROOMS = 1000


def _object(data: bytes | None, what: str, limit: int) -> dict[str, object]:
    if not data or len(data) > limit:
        raise ValueError(f"{what}: expected a JSON object of at most {limit} bytes")
    try:
        value = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise ValueError(f"{what}: not JSON") from None
    if not isinstance(value, dict):
        raise ValueError(f"{what}: expected a JSON object")
    return value


def _b64(value: object, what: str, limit: int) -> bytes:
    if not isinstance(value, str) or len(value) > limit * 4 // 3 + 4:
        raise ValueError(f"{what}: expected base64 of at most {limit} bytes")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"{what}: not base64") from None


def room_of(channel: str, namespace: str) -> str:
    """``doc:notes`` -> ``notes``; ``ValueError`` for another namespace or a bad room name."""
    prefix = f"{namespace}:"
    room = channel[len(prefix) :] if channel.startswith(prefix) else ""
    if not ROOM.fullmatch(room):
        raise ValueError(f"channel: expected {prefix}<room> (a-z, 0-9, -, at most 32)")
    return room


def varuint(data: bytes, at: int = 0) -> tuple[int, int]:
    """The unsigned LEB128 integer at ``data[at:]`` (Yjs' ``varUint``) and the offset after it."""
    value = shift = 0
    for i in range(at, min(len(data), at + 10)):
        value |= (data[i] & 0x7F) << shift
        if data[i] < 0x80:
            return value, i + 1
        shift += 7
    raise ValueError("update: truncated or overlong integer")


def parse_update(data: bytes | None) -> bytes:
    """The Yjs update of a ``doc:<room>`` publication (not yet known to be a valid update).

    An update starts with its number of client groups, and the decoder (yrs, under pycrdt)
    reserves room for that many before reading them: four bytes claiming 2**28 groups cost it
    a second of CPU. Each group takes at least three bytes, so a count above a third of the
    update's length is refused here, before pycrdt sees it.
    """
    update = _b64(_object(data, "update", MAX_UPDATE * 2).get("u"), "update", MAX_UPDATE)
    if not update:
        raise ValueError("update: empty")
    groups, _ = varuint(update)
    if groups > len(update) // 3:
        raise ValueError("update: more client groups than bytes")
    return update


def parse_sync(data: bytes | None) -> tuple[str, bytes]:
    """Room and state vector of a ``sync`` RPC."""
    body = _object(data, "sync", 64 * 1024)
    room = body.get("room")
    if not isinstance(room, str) or not ROOM.fullmatch(room):
        raise ValueError('sync: expected {"room": "<a-z, 0-9, ->", "sv": "<base64>"}')
    return room, _b64(body.get("sv", ""), "sync: sv", 32 * 1024)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class Rooms:
    """One pycrdt ``Doc`` per room, loaded lazily from ``snapshot_dir`` when there is one."""

    def __init__(self, snapshot_dir: Path | None = None, max_rooms: int = MAX_ROOMS) -> None:
        self.snapshot_dir = snapshot_dir
        self.max_rooms = max_rooms
        self.docs: dict[str, Doc] = {}
        self.sizes: dict[str, int] = {}  # bytes merged into each room: an upper bound of its state's size
        self.dirty: set[str] = set()
        if snapshot_dir is not None:
            snapshot_dir.mkdir(parents=True, exist_ok=True)

    def _path(self, room: str) -> Path:
        assert self.snapshot_dir is not None and ROOM.fullmatch(room)
        return self.snapshot_dir / f"{room}.ydoc"

    def doc(self, room: str) -> Doc:
        doc = self.docs.get(room)
        if doc is None:
            if len(self.docs) >= self.max_rooms:
                raise OverflowError("too many rooms")
            doc = Doc()
            size = 0
            if self.snapshot_dir is not None and self._path(room).exists():
                snapshot = self._path(room).read_bytes()
                doc.apply_update(snapshot)
                size = len(snapshot)
            self.docs[room] = doc
            self.sizes[room] = size
        return doc

    def apply(self, room: str, update: bytes) -> None:
        """Merge a client's update into the room's document; ``ValueError`` if it is no Yjs update."""
        doc = self.doc(room)
        if self.sizes[room] + len(update) > MAX_DOCUMENT:
            raise OverflowError("the document is full")
        doc.apply_update(update)  # pycrdt raises ValueError for bytes that do not decode
        self.sizes[room] += len(update)
        self.dirty.add(room)

    def sync(self, room: str, state_vector: bytes) -> tuple[bytes, bytes]:
        """What a client with ``state_vector`` lacks, and the server's own state vector."""
        doc = self.doc(room)
        return doc.get_update(state_vector or None), doc.get_state()

    def save(self) -> int:
        """Write every changed room to ``snapshot_dir`` (atomically: a temporary file, then a rename)."""
        if self.snapshot_dir is None:
            self.dirty.clear()
            return 0
        saved = 0
        for room in sorted(self.dirty):
            path = self._path(room)
            tmp = path.with_suffix(".tmp")
            state = self.docs[room].get_update()
            self.sizes[room] = len(state)
            tmp.write_bytes(state)
            os.replace(tmp, path)
            saved += 1
        self.dirty.clear()
        return saved
