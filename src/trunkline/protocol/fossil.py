"""Fossil delta encoding (the format of ``fossil-scm``'s ``delta.c``), pure and sans-I/O.

A delta turns a *source* byte string into a *target*::

    delta   := int(len(target)) "\\n" command* int(checksum(target)) ";"
    command := int(n) "@" int(offset) ","     copy n bytes of the source from offset
             | int(n) ":" n literal bytes      insert n bytes

Integers are written in Fossil's base 64 (``0-9 A-Z _ a-z ~``), most significant digit
first. The checksum is the sum, modulo 2**32, of the target read as big-endian 32-bit
words (a last partial word padded with zero bytes). Clients apply deltas with
centrifuge-python's ``centrifuge.fossil.apply_delta`` and centrifuge-js's
``applyDelta``.

The encoder is our own, not a port of ``delta.c``. The target is scanned for blocks
of :data:`BLOCK` bytes that occur in the source, and a hit is extended backwards and
forwards with slice comparisons (C ``memcmp``), so the Python loop runs per literal
byte and per copy, not per target byte. A block is looked for first near where the
unchanged text would continue (``bytes.find`` in a :data:`WINDOW`): versions of a
document differ by local edits, and then the source is never indexed. After
:data:`MISSES_BEFORE_INDEX` misses in a row the source's aligned blocks are indexed
in a dict (as Fossil's hash table does), so moved text is found too.

**UTF-8 safe.** The JSON protocol carries a patch as a JSON *string*, which clients
turn back into bytes by UTF-8 encoding it. Every copy therefore starts and ends on
a character boundary of the target (never before a UTF-8 continuation byte), so
each literal run is a whole number of characters: a patch of valid UTF-8 target is
valid UTF-8 itself and survives the string round trip byte for byte. Binary data
loses at most a few bytes of each copy to this rule and stays correct.
"""

from __future__ import annotations

#: bytes per indexed source block (Fossil's NHASH); hits shorter than this are not looked for
BLOCK = 16
#: how far from where unchanged text would continue a block is first looked for (``bytes.find``)
WINDOW = 256
#: misses in a row before the whole source is indexed (the edit is not local: moved or new text)
MISSES_BEFORE_INDEX = 32

_DIGITS = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz~"
_SMALL_INTS = [bytes((d,)) for d in _DIGITS]


def encode_int(n: int) -> bytes:
    """``n`` (>= 0) in Fossil's base-64 digits."""
    if n < 64:
        return _SMALL_INTS[n]
    out = bytearray()
    while n:
        out.append(_DIGITS[n & 63])
        n >>= 6
    out.reverse()
    return bytes(out)


def checksum(data: bytes) -> int:
    """Fossil's checksum: big-endian 32-bit words summed modulo 2**32, the tail zero-padded.

    Summed by byte lane (every fourth byte from 0, 1, 2, 3), which is the same sum.
    """
    return ((sum(data[0::4]) << 24) + (sum(data[1::4]) << 16) + (sum(data[2::4]) << 8) + sum(data[3::4])) & 0xFFFFFFFF


def _is_continuation(byte: int) -> bool:
    return byte & 0xC0 == 0x80


def _common_prefix(a: bytes, i: int, b: bytes, j: int, limit: int) -> int:
    """How many bytes ``a[i:]`` and ``b[j:]`` have in common, at most ``limit``."""
    n = 0
    for step in (512, 64, 8, 1):
        while n + step <= limit and a[i + n : i + n + step] == b[j + n : j + n + step]:
            n += step
    return n


def create(source: bytes, target: bytes) -> bytes:
    """A Fossil delta that turns ``source`` into ``target``."""
    out = [encode_int(len(target)), b"\n"]
    size_t = len(target)
    size_s = len(source)
    literal = 0  # start of the target bytes not yet covered by a command
    if size_s >= BLOCK and size_t >= BLOCK:
        index: dict[bytes, int] | None = None
        misses = 0  # target positions in a row whose block was not found
        shift = 0  # source offset minus target offset of the last copy: where unchanged text continues
        pos = 0
        last = size_t - BLOCK
        while pos <= last:
            block = target[pos : pos + BLOCK]
            near = pos + shift
            offset = source.find(block, max(near - WINDOW, 0), near + WINDOW + BLOCK)
            if offset == -1:
                if index is None and misses >= MISSES_BEFORE_INDEX:
                    # not a local edit: index the source's blocks (the first occurrence wins)
                    blocks = range((size_s - BLOCK) // BLOCK * BLOCK, -1, -BLOCK)
                    index = {source[o : o + BLOCK]: o for o in blocks}
                offset = index.get(block, -1) if index is not None else -1
                if offset == -1:
                    misses += 1
                    pos += 1
                    continue
            misses = 0
            # extend backwards (down to the literal start) and forwards
            start, src = pos, offset
            while start > literal and src > 0 and target[start - 1] == source[src - 1]:
                start -= 1
                src -= 1
            end = pos + BLOCK
            end += _common_prefix(target, end, source, offset + BLOCK, min(size_t - end, size_s - offset - BLOCK))
            # copies begin and end on UTF-8 character boundaries of the target
            while start < end and _is_continuation(target[start]):
                start += 1
                src += 1
            while end > start and end < size_t and _is_continuation(target[end]):
                end -= 1
            count = end - start
            command = encode_int(count) + b"@" + encode_int(src) + b","
            if count <= len(command):  # a copy that costs what the bytes cost: keep them literal
                pos += 1
                continue
            if start > literal:
                out += (encode_int(start - literal), b":", target[literal:start])
            out.append(command)
            literal = pos = end
            shift = src - start
    if literal < size_t:
        out += (encode_int(size_t - literal), b":", target[literal:])
    out += (encode_int(checksum(target)), b";")
    return b"".join(out)
