"""The Fossil delta encoder: byte literals of the format, round trips through both SDKs' decoders."""

from __future__ import annotations

import base64
import json
import random
import subprocess
from pathlib import Path

import pytest
from centrifuge.fossil import apply_delta
from hypothesis import given, settings
from hypothesis import strategies as st

from trunkline.protocol.fossil import checksum, create, encode_int

JS_FOSSIL = Path(__file__).with_name("js_fossil.mjs")
ROOT = Path(__file__).resolve().parents[2]


def test_integers_in_fossil_base64() -> None:
    assert [encode_int(n) for n in (0, 9, 10, 35, 36, 62, 63, 64, 4095, 4096)] == [
        b"0",
        b"9",
        b"A",
        b"Z",
        b"_",
        b"z",
        b"~",
        b"10",
        b"~~",
        b"100",
    ]


def test_checksum_sums_big_endian_words_with_the_tail_padded() -> None:
    assert checksum(b"") == 0
    assert checksum(b"abcd") == 0x61626364
    assert checksum(b"abc") == 0x61626300
    assert checksum(b"abcde") == (0x61626364 + 0x65000000) & 0xFFFFFFFF
    assert checksum(b"\xff" * 8) == (2 * 0xFFFFFFFF) & 0xFFFFFFFF


def test_byte_literals() -> None:
    # empty to empty: size 0, no command, checksum 0
    assert create(b"", b"") == b"0\n0;"
    # nothing to copy from: one insert; 1XObC0 is 0x61626300 in base 64
    assert create(b"", b"abc") == b"3\n3:abc1XObC0;"
    assert create(b"abc", b"abc") == b"3\n3:abc1XObC0;"  # shorter than a block: literal
    text = b"The quick brown fox jumps over the lazy dog. " * 2
    changed = text.replace(b"fox", b"cat")
    # 90 bytes (1Q): copy 16 from 0 (G@0,), insert "cat", copy 42 (f) from 19 (J) - the rest of the
    # sentence and the next one's "The quick brown " -, insert "cat", copy the last 26 (Q) from 19.
    # Fossil's delta.c makes 1Q\nG@0,3:catQ@10,G@0,3:catQ@10,3YloyN; (7 bytes more, same checksum).
    assert create(text, changed) == b"1Q\nG@0,3:catf@J,3:catQ@J,3YloyN;"
    assert create(text, text) == b"1Q\n1Q@0,3aq55R;"


def test_the_literals_decode_with_centrifuge_python() -> None:
    text = b"The quick brown fox jumps over the lazy dog. " * 2
    assert apply_delta(text, b"1Q\nG@0,3:catQ@10,G@0,3:catQ@10,3YloyN;") == text.replace(b"fox", b"cat")


def test_a_small_change_to_a_big_document_is_a_small_patch() -> None:
    doc = {"items": [{"name": f"item {i}", "price": i * 3, "note": "ünïcødé"} for i in range(40)], "v": 1}
    source = json.dumps(doc, ensure_ascii=False).encode()
    doc["items"][7]["price"] = 1
    doc["v"] = 2
    target = json.dumps(doc, ensure_ascii=False).encode()
    patch = create(source, target)
    assert len(target) > 2000
    assert len(patch) < 60
    assert apply_delta(source, patch) == target


_TEXT = st.text(alphabet=st.sampled_from('ab{}":, 01éè€日本😀\n\\'), max_size=300)


def _mutate(base: str, edits: list[tuple[int, int, str]]) -> str:
    out = base
    for at, cut, insert in edits:
        i = at % (len(out) + 1)
        out = out[:i] + insert + out[i + cut % 8 :]
    return out


_PAIRS = st.builds(
    lambda base, edits: (base, _mutate(base, edits)),
    _TEXT,
    st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 7), _TEXT.map(lambda s: s[:6])), max_size=6),
)


@settings(max_examples=400, deadline=None)
@given(_PAIRS)
def test_text_round_trips_and_patches_are_utf8(pair: tuple[str, str]) -> None:
    source, target = (s.encode() for s in pair)
    patch = create(source, target)
    as_string = patch.decode("utf-8")  # a JSON string can carry it: no character is cut
    assert apply_delta(source, as_string.encode("utf-8")) == target


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400), st.binary(max_size=400), st.integers(0, 400))
def test_binary_round_trips(source: bytes, tail: bytes, cut: int) -> None:
    target = source[:cut] + tail + source[cut:] if cut % 2 else source[cut:] + tail
    assert apply_delta(source, create(source, target)) == target


def _js_apply(cases: list[tuple[bytes, str]]) -> list[dict[str, str]]:
    lines = "".join(json.dumps({"source": base64.b64encode(s).decode(), "patch": p}) + "\n" for s, p in cases)
    done = subprocess.run(
        ["node", str(JS_FOSSIL)], input=lines, capture_output=True, text=True, timeout=60, cwd=ROOT, check=True
    )
    return [json.loads(line) for line in done.stdout.splitlines()]


@pytest.fixture(scope="module")
def js_cases() -> list[tuple[bytes, bytes]]:
    """Text pairs drawn by hypothesis, collected for one Node run."""
    cases: list[tuple[bytes, bytes]] = []

    @settings(max_examples=300, deadline=None, database=None)
    @given(_PAIRS)
    def collect(pair: tuple[str, str]) -> None:
        cases.append((pair[0].encode(), pair[1].encode()))

    collect()
    return cases


def test_centrifuge_js_decoder_applies_the_patches(js_cases: list[tuple[bytes, bytes]]) -> None:
    assert len(js_cases) >= 100
    results = _js_apply([(s, create(s, t).decode()) for s, t in js_cases])
    assert len(results) == len(js_cases)
    for (_, target), result in zip(js_cases, results, strict=True):
        assert result == {"target": base64.b64encode(target).decode()}


def test_centrifuge_js_refuses_a_corrupt_patch() -> None:
    # the checker works: a wrong checksum is an error, not a silent wrong target
    [result] = _js_apply([(b"", "3\n3:abc1XObC1;")])
    assert "error" in result


def test_text_moved_far_away_is_still_copied() -> None:
    # beyond the search window around the expected place: found through the source's block index
    rng = random.Random(5)
    source = bytes(rng.getrandbits(8) for _ in range(3000))
    target = source[2000:] + b"new" + source[:2000]
    patch = create(source, target)
    assert apply_delta(source, patch) == target
    assert len(patch) < 40
