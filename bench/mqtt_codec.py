"""µs per decode / encode of a 100-byte-payload MQTT PUBLISH: our codec (3.1.1 and 5) next to ``mqtt5``.

    .venv/bin/python bench/mqtt_codec.py            # best of 7 repeats of 20 000 operations each
    .venv/bin/python bench/mqtt_codec.py --quick    # 3 repeats of 2 000

The packet: topic ``sensors/room-1/temperature``, 100-byte payload, QoS 0 and QoS 1 (packet id 7),
no properties. Decoding goes through a connected :class:`Decoder` (``feed`` of one whole packet, the
server's hot path) and through :func:`decode_packet`; "feed x64" feeds 64 packets in one piece and
reports µs per packet. ``mqtt5`` (a Rust codec, MQTT 5 only) reads with ``mqtt5.read(memoryview)``
and writes with ``PublishPacket.write()``. Figures are the best repeat, in µs per operation; the
shared 2-core VM varies by tens of percent between runs, so compare within one run.
"""

from __future__ import annotations

import argparse
import timeit
from collections.abc import Callable

import mqtt5

from trunkline.mqtt.codec import Decoder, decode_packet, encode
from trunkline.mqtt.packets import Connect, Publish

TOPIC = "sensors/room-1/temperature"
PAYLOAD = bytes(range(100))


def best_us(fn: Callable[[], object], number: int, repeat: int) -> float:
    return min(timeit.repeat(fn, number=number, repeat=repeat)) / number * 1e6


def connected(version: int) -> Decoder:
    decoder = Decoder(1 << 20)
    decoder.feed(encode(Connect(version, "bench"), version))
    return decoder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    number, repeat = (2_000, 3) if args.quick else (20_000, 7)

    rows: list[tuple[str, float]] = []
    for qos in (0, 1):
        packet = Publish(TOPIC, PAYLOAD, qos, packet_id=7 if qos else None)
        for version in (4, 5):
            wire = encode(packet, version)
            decoder = connected(version)
            assert decoder.feed(wire) == [packet]
            assert decode_packet(wire, version) == packet
            name = f"ours v{'3.1.1' if version == 4 else '5'} QoS {qos}"
            rows.append((f"{name} decode (Decoder.feed)", best_us(lambda d=decoder, w=wire: d.feed(w), number, repeat)))
            batch = wire * 64
            rows.append(
                (
                    f"{name} decode (feed x64, per packet)",
                    best_us(lambda d=decoder, b=batch: d.feed(b), number // 64 or 1, repeat) / 64,
                )
            )
            one = best_us(lambda w=wire, v=version: decode_packet(w, v), number, repeat)
            rows.append((f"{name} decode (decode_packet)", one))
            rows.append((f"{name} encode", best_us(lambda p=packet, v=version: encode(p, v), number, repeat)))
        theirs = mqtt5.PublishPacket(TOPIC, PAYLOAD, qos=mqtt5.QoS(qos), packet_id=7 if qos else None)
        wire = theirs.write()
        assert wire == encode(packet, 5), "mqtt5 and ours write different bytes"
        view = memoryview(wire)
        rows.append((f"mqtt5 v5 QoS {qos} decode (read)", best_us(lambda v=view: mqtt5.read(v), number, repeat)))
        rows.append((f"mqtt5 v5 QoS {qos} encode (write)", best_us(theirs.write, number, repeat)))

    print(f"PUBLISH, topic {len(TOPIC)} bytes, payload {len(PAYLOAD)} bytes; best of {repeat} x {number}")
    for label, us in rows:
        print(f"  {label:<44} {us:7.3f} µs")


if __name__ == "__main__":
    main()
