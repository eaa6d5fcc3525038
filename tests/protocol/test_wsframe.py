"""The server-side WebSocket frame parser and builders (RFC 6455 §5), byte for byte.

Client frames are built here by :func:`client_frame`, a reference encoder written
independently of :mod:`trunkline.protocol.wsframe`; the server's unmasked frames are
compared with byte literals.
"""

from __future__ import annotations

from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trunkline.protocol import wsframe
from trunkline.protocol.wsframe import (
    BINARY,
    CLOSE,
    CONTINUATION,
    INVALID_TEXT,
    MESSAGE_TOO_BIG,
    NO_STATUS,
    PING,
    PONG,
    PROTOCOL_ERROR,
    TEXT,
    FrameParser,
    close_frame,
    frame,
    parse_close,
    unmask,
)
from trunkline.transport.ws_connection import UNMASK

MASK = b"\x37\xfa\x21\x3d"


def client_frame(
    fin: bool,
    opcode: int,
    payload: bytes,
    mask: bytes = MASK,
    *,
    rsv: int = 0,
    masked: bool = True,
    length: int | None = None,
) -> bytes:
    """A client frame: FIN/RSV/opcode, mask bit + length form, mask key, masked payload.

    ``length`` overrides the length written in the header (the payload is still appended
    as given), ``masked=False`` writes an unmasked frame, ``rsv`` is OR-ed into byte 0.
    """
    n = len(payload) if length is None else length
    b0 = (0x80 if fin else 0) | (rsv << 4) | opcode
    mbit = 0x80 if masked else 0
    if n <= 125:
        head = bytes((b0, mbit | n))
    elif n <= 0xFFFF:
        head = bytes((b0, mbit | 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((b0, mbit | 127)) + n.to_bytes(8, "big")
    if not masked:
        return head + payload
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + mask + body


def feed_all(parser: FrameParser, chunks: list[bytes]) -> list[tuple[int, bytes]]:
    out: list[tuple[int, bytes]] = []
    for chunk in chunks:
        out.extend(parser.feed(chunk))
    return out


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c for c in cuts if 0 < c < len(data)})
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in pairwise(bounds)]


def assert_error_then_silent(parser: FrameParser, code: int) -> None:
    assert parser.error is not None
    assert parser.error.code == code
    assert parser.feed(client_frame(True, TEXT, b"ok")) == []
    assert parser.feed(b"") == []


# --------------------------------------------------------------------------- frame()


def test_frame_125_bytes_uses_the_7_bit_length() -> None:
    out = frame(b"x" * 125, 0x81)
    assert out[:2] == b"\x81\x7d"
    assert out[2:] == b"x" * 125
    assert len(out) == 127


def test_frame_126_bytes_uses_the_16_bit_length() -> None:
    out = frame(b"y" * 126, 0x81)
    assert out[:4] == b"\x81\x7e\x00\x7e"
    assert out[4:] == b"y" * 126


def test_frame_65535_bytes_still_uses_the_16_bit_length() -> None:
    out = frame(b"z" * 65535, 0x82)
    assert out[:4] == b"\x82\x7e\xff\xff"
    assert len(out) == 4 + 65535


def test_frame_65536_bytes_uses_the_64_bit_length() -> None:
    out = frame(b"\x00" * 65536, 0x82)
    assert out[:10] == b"\x82\x7f" + (65536).to_bytes(8, "big")
    assert out[:10] == b"\x82\x7f\x00\x00\x00\x00\x00\x01\x00\x00"
    assert len(out) == 10 + 65536


def test_frame_small_text() -> None:
    assert frame(b"abc", 0x81) == b"\x81\x03abc"
    assert frame(b"", 0x89) == b"\x89\x00"


def test_close_frame_code_only() -> None:
    assert close_frame(1000, "") == b"\x88\x02\x03\xe8"


def test_close_frame_with_reason() -> None:
    assert close_frame(1001, "bye") == b"\x88\x05\x03\xe9bye"


def test_close_frame_long_reason_is_cut_on_a_character_boundary() -> None:
    out = close_frame(1000, "é" * 100)
    assert out[0] == 0x88
    n = out[1]
    assert n <= 125
    payload = out[2:]
    assert len(payload) == n
    assert payload[:2] == b"\x03\xe8"
    reason = payload[2:].decode("utf-8")  # strict: no half character left
    assert reason == "é" * 61
    # it parses back as a valid close payload
    assert parse_close(payload) == (1000, "é" * 61)


def test_close_frame_ascii_reason_is_cut_to_123_bytes() -> None:
    out = close_frame(1000, "a" * 500)
    assert out[:2] == b"\x88\x7d"
    assert out[4:] == b"a" * 123


def test_close_frame_reason_of_exactly_123_bytes_is_kept() -> None:
    out = close_frame(4000, "b" * 123)
    assert out == b"\x88\x7d" + (4000).to_bytes(2, "big") + b"b" * 123


# --------------------------------------------------------------------------- unmask()


def test_unmask_rfc6455_example() -> None:
    # RFC 6455 §5.7: a single-frame masked text message containing "Hello"
    wire = b"\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58"
    assert unmask(wire[6:], wire[2:6]) == b"Hello"
    parser = FrameParser()
    assert parser.feed(wire) == [(TEXT, b"Hello")]
    assert parser.error is None


def test_unmask_empty() -> None:
    assert unmask(b"", MASK) == b""
    assert unmask(bytearray(), bytearray(MASK)) == b""


def test_unmask_is_its_own_inverse_and_matches_the_bytewise_xor() -> None:
    data = bytes(range(256)) * 3 + b"\x00\x01\x02"
    mask = b"\x01\x80\xff\x00"
    expected = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
    assert unmask(data, mask) == expected
    assert unmask(bytearray(expected), bytearray(mask)) == data
    # leading/trailing zero bytes survive the big-integer XOR
    assert unmask(b"\x00\x00\x00", b"\x00\x00\x00\x00") == b"\x00\x00\x00"


# --------------------------------------------------------------------------- parse_close()


def test_parse_close_empty_is_no_status() -> None:
    assert parse_close(b"") == (NO_STATUS, "")
    assert NO_STATUS == 1005


# --------------------------------------------------------------------------- FrameParser: valid input


def test_masked_text_frame() -> None:
    parser = FrameParser()
    assert parser.feed(client_frame(True, TEXT, "héllo".encode())) == [(TEXT, "héllo".encode())]
    assert parser.error is None


def test_binary_frame() -> None:
    parser = FrameParser()
    payload = bytes(range(256))
    assert parser.feed(client_frame(True, BINARY, payload, b"\xa1\xb2\xc3\xd4")) == [(BINARY, payload)]
    assert parser.error is None


def test_binary_frame_with_16_and_64_bit_lengths() -> None:
    parser = FrameParser()
    mid = b"m" * 300
    big = bytes(range(256)) * 300  # 76 800 bytes: 64-bit length
    out = parser.feed(client_frame(True, BINARY, mid) + client_frame(True, BINARY, big))
    assert out == [(BINARY, mid), (BINARY, big)]
    assert parser.error is None


def test_empty_text_and_binary_frames() -> None:
    parser = FrameParser()
    assert parser.feed(client_frame(True, TEXT, b"") + client_frame(True, BINARY, b"")) == [
        (TEXT, b""),
        (BINARY, b""),
    ]


def test_ping_and_pong() -> None:
    parser = FrameParser()
    assert parser.feed(client_frame(True, PING, b"are you there")) == [(PING, b"are you there")]
    assert parser.feed(client_frame(True, PONG, b"")) == [(PONG, b"")]
    assert parser.feed(client_frame(True, PING, b"p" * 125)) == [(PING, b"p" * 125)]
    assert parser.error is None


def test_close_with_code_and_reason() -> None:
    parser = FrameParser()
    payload = (1001).to_bytes(2, "big") + "going away ✓".encode()
    out = parser.feed(client_frame(True, CLOSE, payload))
    assert out == [(CLOSE, payload)]
    assert parse_close(out[0][1]) == (1001, "going away ✓")
    assert parser.error is None


def test_empty_close() -> None:
    parser = FrameParser()
    out = parser.feed(client_frame(True, CLOSE, b""))
    assert out == [(CLOSE, b"")]
    assert parse_close(out[0][1]) == (1005, "")
    assert parser.error is None


def _fragmented_stream() -> bytes:
    return (
        client_frame(False, TEXT, b"Hel", b"\x01\x02\x03\x04")
        + client_frame(True, PING, b"ping!", b"\x05\x06\x07\x08")
        + client_frame(False, CONTINUATION, b"lo, ", b"\x09\x0a\x0b\x0c")
        + client_frame(True, CONTINUATION, "wörld".encode(), b"\x0d\x0e\x0f\x10")
    )


def test_fragmented_message_with_interleaved_ping() -> None:
    parser = FrameParser()
    assert parser.feed(_fragmented_stream()) == [(PING, b"ping!"), (TEXT, "Hello, wörld".encode())]
    assert parser.error is None


def test_fragmented_message_frame_by_frame() -> None:
    parser = FrameParser()
    assert parser.feed(client_frame(False, BINARY, b"ab")) == []
    assert parser.feed(client_frame(False, CONTINUATION, b"")) == []
    assert parser.feed(client_frame(True, PONG, b"x")) == [(PONG, b"x")]
    assert parser.feed(client_frame(True, CONTINUATION, b"cd")) == [(BINARY, b"abcd")]
    # and the next message starts fresh
    assert parser.feed(client_frame(True, TEXT, b"next")) == [(TEXT, b"next")]
    assert parser.error is None


def test_text_split_inside_a_utf8_character_across_fragments() -> None:
    data = "€".encode()  # 3 bytes
    parser = FrameParser()
    out = parser.feed(client_frame(False, TEXT, data[:1]) + client_frame(True, CONTINUATION, data[1:]))
    assert out == [(TEXT, data)]
    assert parser.error is None


def _mixed_stream() -> tuple[bytes, list[tuple[int, bytes]]]:
    close_payload = (1000).to_bytes(2, "big") + b"done"
    stream = (
        client_frame(True, TEXT, b"first")
        + _fragmented_stream()
        + client_frame(True, BINARY, b"\x00" * 130, b"\xff\x00\xff\x00")
        + client_frame(True, PONG, b"")
        + client_frame(True, TEXT, b"")
        + client_frame(True, CLOSE, close_payload)
    )
    expected = [
        (TEXT, b"first"),
        (PING, b"ping!"),
        (TEXT, "Hello, wörld".encode()),
        (BINARY, b"\x00" * 130),
        (PONG, b""),
        (TEXT, b""),
        (CLOSE, close_payload),
    ]
    return stream, expected


def test_several_frames_in_one_feed() -> None:
    stream, expected = _mixed_stream()
    parser = FrameParser()
    assert parser.feed(stream) == expected
    assert parser.error is None


def test_stream_split_at_every_offset() -> None:
    stream, expected = _mixed_stream()
    for cut in range(len(stream) + 1):
        parser = FrameParser()
        out = parser.feed(stream[:cut]) + parser.feed(stream[cut:])
        assert out == expected, cut
        assert parser.error is None


def test_stream_fed_one_byte_at_a_time() -> None:
    stream, expected = _mixed_stream()
    parser = FrameParser()
    out = feed_all(parser, [stream[i : i + 1] for i in range(len(stream))])
    assert out == expected
    assert parser.error is None


def test_stream_split_at_every_pair_of_offsets_in_the_headers() -> None:
    # a 64-bit length frame followed by a small one: cut twice in the first 16 bytes
    stream = client_frame(True, BINARY, b"q" * 70000) + client_frame(True, TEXT, b"t")
    expected = [(BINARY, b"q" * 70000), (TEXT, b"t")]
    for a in range(16):
        for b in range(a, 16):
            parser = FrameParser()
            assert feed_all(parser, [stream[:a], stream[a:b], stream[b:]]) == expected, (a, b)


def test_empty_feeds_are_harmless() -> None:
    parser = FrameParser()
    wire = client_frame(True, TEXT, b"hi")
    assert parser.feed(b"") == []
    assert parser.feed(wire[:3]) == []
    assert parser.feed(b"") == []
    assert parser.feed(wire[3:]) == [(TEXT, b"hi")]
    assert parser.feed(b"") == []
    assert parser.error is None


def test_payloads_are_bytes() -> None:
    parser = FrameParser()
    wire = client_frame(True, BINARY, b"abc") + client_frame(True, PING, b"p")
    out = parser.feed(wire[:4]) + parser.feed(wire[4:])
    assert out == [(BINARY, b"abc"), (PING, b"p")]
    assert all(type(p) is bytes for _, p in out)


# --------------------------------------------------------------------------- FrameParser: errors


def test_unmasked_frame_is_a_protocol_error() -> None:
    parser = FrameParser()
    out = parser.feed(client_frame(True, TEXT, b"ok") + client_frame(True, TEXT, b"bad", masked=False))
    assert out == [(TEXT, b"ok")]
    assert_error_then_silent(parser, PROTOCOL_ERROR)


@pytest.mark.parametrize("rsv", [1, 2, 4, 7])
def test_reserved_bit_is_a_protocol_error(rsv: int) -> None:
    parser = FrameParser()
    out = parser.feed(client_frame(True, PING, b"1") + client_frame(True, TEXT, b"x", rsv=rsv))
    assert out == [(PING, b"1")]
    assert_error_then_silent(parser, PROTOCOL_ERROR)


@pytest.mark.parametrize("opcode", [3, 4, 7, 11, 15])
def test_unknown_opcode_is_a_protocol_error(opcode: int) -> None:
    parser = FrameParser()
    out = parser.feed(client_frame(True, BINARY, b"b") + client_frame(True, opcode, b"x"))
    assert out == [(BINARY, b"b")]
    assert_error_then_silent(parser, PROTOCOL_ERROR)


@pytest.mark.parametrize("opcode", [PING, PONG, CLOSE])
def test_control_frame_of_126_bytes_is_a_protocol_error(opcode: int) -> None:
    payload = (1000).to_bytes(2, "big") + b"r" * 124
    parser = FrameParser()
    out = parser.feed(client_frame(True, TEXT, b"a") + client_frame(True, opcode, payload))
    assert out == [(TEXT, b"a")]
    assert_error_then_silent(parser, PROTOCOL_ERROR)


def test_long_control_frame_is_refused_on_its_header() -> None:
    parser = FrameParser()
    wire = client_frame(True, PING, b"p" * 200)
    assert parser.feed(wire[:4]) == []  # 2 bytes + 16-bit length
    assert_error_then_silent(parser, PROTOCOL_ERROR)


@pytest.mark.parametrize("opcode", [PING, PONG, CLOSE])
def test_control_frame_without_fin_is_a_protocol_error(opcode: int) -> None:
    parser = FrameParser()
    out = parser.feed(client_frame(True, TEXT, b"a") + client_frame(False, opcode, b""))
    assert out == [(TEXT, b"a")]
    assert_error_then_silent(parser, PROTOCOL_ERROR)


@pytest.mark.parametrize("fin", [True, False])
def test_continuation_without_start_is_a_protocol_error(fin: bool) -> None:
    parser = FrameParser()
    out = parser.feed(client_frame(True, TEXT, b"a") + client_frame(fin, CONTINUATION, b"b"))
    assert out == [(TEXT, b"a")]
    assert_error_then_silent(parser, PROTOCOL_ERROR)


@pytest.mark.parametrize("opcode", [TEXT, BINARY])
@pytest.mark.parametrize("fin", [True, False])
def test_new_message_inside_a_fragmented_one_is_a_protocol_error(opcode: int, fin: bool) -> None:
    parser = FrameParser()
    out = parser.feed(
        client_frame(False, TEXT, b"start") + client_frame(True, PING, b"") + client_frame(fin, opcode, b"new")
    )
    assert out == [(PING, b"")]
    assert_error_then_silent(parser, PROTOCOL_ERROR)


def test_close_of_one_byte_is_a_protocol_error() -> None:
    parser = FrameParser()
    out = parser.feed(client_frame(True, PONG, b"") + client_frame(True, CLOSE, b"\x03"))
    assert out == [(PONG, b"")]
    assert_error_then_silent(parser, PROTOCOL_ERROR)


@pytest.mark.parametrize("code", [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535])
def test_close_code_that_may_not_be_sent_is_a_protocol_error(code: int) -> None:
    parser = FrameParser()
    out = parser.feed(client_frame(True, TEXT, b"a") + client_frame(True, CLOSE, code.to_bytes(2, "big") + b"why"))
    assert out == [(TEXT, b"a")]
    assert_error_then_silent(parser, PROTOCOL_ERROR)


@pytest.mark.parametrize("code", [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999])
def test_close_code_that_may_be_sent_is_accepted(code: int) -> None:
    payload = code.to_bytes(2, "big") + b"fine"
    parser = FrameParser()
    assert parser.feed(client_frame(True, CLOSE, payload)) == [(CLOSE, payload)]
    assert parser.error is None
    assert parse_close(payload) == (code, "fine")


def test_close_reason_not_utf8_is_invalid_text() -> None:
    parser = FrameParser()
    out = parser.feed(client_frame(True, TEXT, b"a") + client_frame(True, CLOSE, b"\x03\xe8\xff\xfe"))
    assert out == [(TEXT, b"a")]
    assert_error_then_silent(parser, INVALID_TEXT)


def test_text_not_utf8_is_invalid_text() -> None:
    parser = FrameParser()
    out = parser.feed(client_frame(True, BINARY, b"\xff") + client_frame(True, TEXT, b"\xff"))
    assert out == [(BINARY, b"\xff")]
    assert_error_then_silent(parser, INVALID_TEXT)


def test_fragmented_text_not_utf8_is_invalid_text() -> None:
    data = "€".encode()
    parser = FrameParser()
    out = parser.feed(client_frame(False, TEXT, data[:2]) + client_frame(True, CONTINUATION, b"x"))
    assert out == []
    assert_error_then_silent(parser, INVALID_TEXT)


def test_binary_not_utf8_is_fine() -> None:
    parser = FrameParser()
    assert parser.feed(client_frame(True, BINARY, b"\xff\xfe\x80")) == [(BINARY, b"\xff\xfe\x80")]
    assert parser.feed(client_frame(False, BINARY, b"\xc3") + client_frame(True, CONTINUATION, b"\xff")) == [
        (BINARY, b"\xc3\xff")
    ]
    assert parser.error is None


def test_frame_length_over_2_63_is_a_protocol_error() -> None:
    parser = FrameParser()
    assert parser.feed(b"\x82\xff" + (1 << 63).to_bytes(8, "big")) == []
    assert_error_then_silent(parser, PROTOCOL_ERROR)


def test_message_over_limit_is_too_big() -> None:
    parser = FrameParser(max_message=100)
    out = parser.feed(client_frame(True, TEXT, b"a" * 100) + client_frame(True, BINARY, b"b" * 101))
    assert out == [(TEXT, b"a" * 100)]
    assert_error_then_silent(parser, MESSAGE_TOO_BIG)


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 1000, 65535])
def test_one_whole_frame_per_read_up_to_the_16_bit_length(size: int) -> None:
    """The read that holds exactly one frame (the parser's shortcut) gives what the full parse gives."""
    text = ("é" * size).encode()[:size] if size % 2 == 0 else b"t" * size
    for opcode, payload in ((TEXT, text), (BINARY, bytes(range(256)) * (size // 256) + bytes(size % 256))):
        parser = FrameParser(max_message=65535)
        assert parser.feed(client_frame(True, opcode, payload)) == [(opcode, payload)]
        assert parser.feed(client_frame(True, opcode, payload)) == [(opcode, payload)]
        assert parser.error is None


@pytest.mark.parametrize("size", [101, 126, 300])
def test_one_whole_frame_per_read_over_the_limit_is_too_big(size: int) -> None:
    parser = FrameParser(max_message=100)
    assert parser.feed(client_frame(True, TEXT, b"a" * size)) == []
    assert_error_then_silent(parser, MESSAGE_TOO_BIG)


@pytest.mark.parametrize("size", [10, 200])
def test_one_whole_frame_per_read_of_bad_utf8_is_invalid_text(size: int) -> None:
    parser = FrameParser()
    assert parser.feed(client_frame(True, TEXT, b"\xff" * size)) == []
    assert_error_then_silent(parser, INVALID_TEXT)


@pytest.mark.parametrize("size", [10, 200])
def test_one_read_with_a_frame_and_a_byte_more_is_parsed_whole(size: int) -> None:
    """A read longer than its first frame is not the shortcut's: the extra byte waits for the rest."""
    parser = FrameParser()
    second = client_frame(True, TEXT, b"next")
    assert parser.feed(client_frame(True, TEXT, b"x" * size) + second[:1]) == [(TEXT, b"x" * size)]
    assert parser.feed(second[1:]) == [(TEXT, b"next")]
    assert parser.error is None


def test_message_over_limit_is_refused_on_its_header() -> None:
    parser = FrameParser(max_message=1000)
    header = client_frame(True, BINARY, b"", length=1_000_000)  # 2 + 8 + 4 (mask) bytes, no payload
    assert len(header) == 14
    assert parser.feed(header[:10]) == []  # length known, mask not yet
    assert parser.error is not None
    assert parser.error.code == MESSAGE_TOO_BIG
    assert_error_then_silent(parser, MESSAGE_TOO_BIG)


def test_message_over_limit_is_refused_on_its_header_in_one_feed() -> None:
    parser = FrameParser(max_message=1000)
    assert parser.feed(client_frame(True, TEXT, b"", length=1_000_000)) == []
    assert_error_then_silent(parser, MESSAGE_TOO_BIG)
    assert len(parser._buf) == 0


def test_fragments_over_limit_are_too_big() -> None:
    parser = FrameParser(max_message=1000)
    assert parser.feed(client_frame(False, BINARY, b"x" * 400)) == []
    assert parser.feed(client_frame(False, CONTINUATION, b"x" * 400)) == []
    assert parser.feed(client_frame(True, PING, b"")) == [(PING, b"")]
    assert parser.error is None
    # 800 + 201 > 1000: refused on the header of the third fragment
    wire = client_frame(True, CONTINUATION, b"x" * 201)
    assert parser.feed(wire[:4]) == []
    assert_error_then_silent(parser, MESSAGE_TOO_BIG)


def test_message_of_exactly_the_limit_is_accepted() -> None:
    parser = FrameParser(max_message=1000)
    assert parser.feed(client_frame(True, BINARY, b"e" * 1000)) == [(BINARY, b"e" * 1000)]
    out = parser.feed(
        client_frame(False, TEXT, b"a" * 600)
        + client_frame(False, CONTINUATION, b"b" * 399)
        + client_frame(True, CONTINUATION, b"c")
    )
    assert out == [(TEXT, b"a" * 600 + b"b" * 399 + b"c")]
    # the count starts again for the next message
    assert parser.feed(client_frame(True, TEXT, b"d" * 1000)) == [(TEXT, b"d" * 1000)]
    assert parser.error is None


def test_control_frames_do_not_count_toward_the_limit() -> None:
    parser = FrameParser(max_message=10)
    out = parser.feed(
        client_frame(False, TEXT, b"a" * 10)
        + client_frame(True, PING, b"p" * 125)
        + client_frame(True, CONTINUATION, b"")
    )
    assert out == [(PING, b"p" * 125), (TEXT, b"a" * 10)]
    assert parser.error is None


# --------------------------------------------------------------------------- bounded buffering


def test_large_frame_in_small_chunks_is_buffered_once() -> None:
    payload = bytes(range(256)) * 781 + b"\x01" * 64  # 200 000 bytes
    assert len(payload) == 200_000
    wire = client_frame(True, BINARY, payload, b"\x10\x20\x30\x40")
    size = len(wire)  # header (2 + 8 + 4) + payload
    parser = FrameParser(max_message=0)
    chunks = [wire[i : i + 1000] for i in range(0, size, 1000)]
    for chunk in chunks[:-1]:
        assert parser.feed(chunk) == []
        assert len(parser._buf) <= size
    assert parser.feed(chunks[-1]) == [(BINARY, payload)]
    assert len(parser._buf) == 0
    assert parser.error is None


def test_buffer_holds_only_the_incomplete_frame() -> None:
    parser = FrameParser()
    first = client_frame(True, TEXT, b"a" * 50)
    second = client_frame(True, BINARY, b"b" * 300)
    assert parser.feed(first + second[:100]) == [(TEXT, b"a" * 50)]
    assert bytes(parser._buf) == second[:100]
    assert parser.feed(second[100:]) == [(BINARY, b"b" * 300)]
    assert len(parser._buf) == 0


# --------------------------------------------------------------------------- hypothesis

_message = st.one_of(
    st.tuples(st.just(TEXT), st.text(max_size=300).map(str.encode)),
    st.tuples(st.just(BINARY), st.binary(max_size=300)),
)


@st.composite
def _stream_and_expected(draw: st.DrawFn) -> tuple[bytes, list[tuple[int, bytes]]]:
    messages = draw(st.lists(_message, max_size=8))
    stream = b""
    expected: list[tuple[int, bytes]] = []
    for opcode, payload in messages:
        cuts = sorted(draw(st.lists(st.integers(0, len(payload)), max_size=4)))
        bounds = [0, *cuts, len(payload)]
        parts = [payload[a:b] for a, b in pairwise(bounds)]
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            mask = draw(st.binary(min_size=4, max_size=4))
            stream += client_frame(last, opcode if i == 0 else CONTINUATION, part, mask)
            if not last and draw(st.booleans()):
                ping = draw(st.binary(max_size=125))
                stream += client_frame(True, PING, ping, draw(st.binary(min_size=4, max_size=4)))
                expected.append((PING, ping))
        expected.append((opcode, payload))
    return stream, expected


@settings(max_examples=200, deadline=None)
@given(_stream_and_expected(), st.lists(st.integers(0, 20_000), max_size=20))
def test_random_messages_round_trip(case: tuple[bytes, list[tuple[int, bytes]]], cuts: list[int]) -> None:
    stream, expected = case
    parser = FrameParser()
    out = feed_all(parser, split_at(stream, [c % (len(stream) + 1) for c in cuts]))
    assert parser.error is None
    assert out == expected
    assert len(parser._buf) == 0


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2000), st.lists(st.integers(0, 2000), max_size=30), st.integers(0, 3000))
def test_garbage_never_raises(data: bytes, cuts: list[int], limit: int) -> None:
    parser = FrameParser(max_message=limit)
    given_bytes = 0
    returned = 0
    errored = False
    for chunk in split_at(data, cuts):
        out = parser.feed(chunk)
        given_bytes += len(chunk)
        if errored:
            assert out == []
        for opcode, payload in out:
            assert opcode in (TEXT, BINARY, PING, PONG, CLOSE)
            assert type(payload) is bytes
            returned += len(payload)
        assert returned <= given_bytes
        if parser.error is not None:
            errored = True
            assert parser.error.code in (PROTOCOL_ERROR, INVALID_TEXT, MESSAGE_TOO_BIG)
    if errored:
        assert parser.feed(client_frame(True, TEXT, b"after")) == []


@settings(max_examples=200, deadline=None)
@given(payload=st.binary(max_size=3000), mask=st.binary(min_size=4, max_size=4))
def test_the_pure_and_the_compiled_unmasking_agree(payload: bytes, mask: bytes) -> None:
    expected = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    assert wsframe.unmask(payload, mask) == expected
    assert UNMASK(payload, mask) == expected
    assert UNMASK is not wsframe.unmask  # the installed aiohttp has its compiled loop
    parser = FrameParser(0, UNMASK)
    frame = bytes([0x82, 0x80 | 126]) + len(payload).to_bytes(2, "big") + mask if len(payload) >= 126 else None
    if frame is not None:
        assert parser.feed(frame + expected) == [(0x2, payload)]


def test_short_unmasked_frames_never_take_the_single_frame_fast_path() -> None:
    """Reads whose length matches a 7-bit masked frame but whose mask bit is clear are refused."""
    for data in (b"\x81\x7e\x00\x00", b"\x81\x7f" + bytes(8), b"\x82\x05hello\x00"):
        parser = FrameParser()
        assert parser.feed(data) == []
        assert parser.error is not None and parser.error.code == 1002
