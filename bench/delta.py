"""Fossil delta compression: CPU per publication and bytes saved (issue 13).

The payload is a ~2 KiB JSON document (an order book with non-ASCII names) of which
a few fields change per version (``tests/delta/helpers.document``). Measured in this
process, no sockets, CPU time (``time.process_time``), best of several rounds:

1. the encoder alone: ``trunkline.protocol.fossil.create`` per patch, and, if it is
   importable, PyPI ``python-fossil-delta`` (``fossil_delta.create_delta``, Fossil's C
   code) on the same pairs; how many of its patches of non-ASCII text are not valid
   UTF-8 (those cannot travel in a JSON string);
2. the hub's fan-out of a stream of publications to N JSON subscribers (pushes are
   list appends, as the writer's are): plain subscribers vs delta subscribers. The
   patch is made once per publication, so the delta cost per publication is a
   constant, and per delivery it shrinks as N grows;
3. bytes per delivery: the push line a plain subscriber gets vs a delta subscriber.

    .venv/bin/python bench/delta.py [--subscribers 1000] [--publications 200]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

from tests.delta.helpers import document  # noqa: E402

from trunkline.hub.registry import Hub  # noqa: E402
from trunkline.protocol import fossil  # noqa: E402
from trunkline.protocol.codec import JSON_SHAPE  # noqa: E402
from trunkline.protocol.delta import JSON_DELTA_SHAPE  # noqa: E402
from trunkline.records import Publication  # noqa: E402

try:
    import fossil_delta  # type: ignore[import-not-found]
except ImportError:
    fossil_delta = None


def best(fn: Callable[[], object], number: int, rounds: int = 7) -> float:
    """Best CPU seconds per call over ``rounds`` rounds of ``number`` calls."""
    out = []
    for _ in range(rounds):
        started = time.process_time()
        for _ in range(number):
            fn()
        out.append((time.process_time() - started) / number)
    return min(out)


def encoder(pairs: list[tuple[bytes, bytes]]) -> None:
    print("## encoder, per patch of a ~2 KiB document\n")
    print("| encoder | µs per patch | mean patch bytes | of data bytes |")
    print("|---|---|---|---|")
    mean_data = sum(len(t) for _, t in pairs) / len(pairs)
    rows = [("trunkline.protocol.fossil (pure Python)", fossil.create)]
    if fossil_delta is not None:
        rows.append(("python-fossil-delta (Fossil's C, cffi)", fossil_delta.create_delta))
    for name, create in rows:
        turn = iter(range(10**9))

        def one(create: Callable[[bytes, bytes], bytes] = create, turn: Iterator[int] = turn) -> None:
            s, t = pairs[next(turn) % len(pairs)]
            create(s, t)

        per = best(one, 300)
        mean = sum(len(create(s, t)) for s, t in pairs) / len(pairs)
        print(f"| {name} | {per * 1e6:.1f} | {mean:.0f} | {mean / mean_data:.1%} |")
    if fossil_delta is None:
        print("\n(python-fossil-delta is not installed: `pip install python-fossil-delta` to compare)")
    else:
        rng = random.Random(3)
        alphabet = "abcdéèêëüöäß€😀日本語"
        bad = 0
        n = 2000
        for _ in range(n):
            s = "".join(rng.choice(alphabet) for _ in range(rng.randint(20, 200)))
            chars = list(s)
            for _ in range(rng.randint(1, 5)):
                chars[rng.randrange(len(chars))] = rng.choice(alphabet)
            patch = fossil_delta.create_delta(s.encode(), "".join(chars).encode())
            try:
                patch.decode("utf-8")
            except UnicodeDecodeError:
                bad += 1
        ours = sum(1 for s, t in pairs if _utf8(fossil.create(s, t)))
        print(
            f"\nnon-ASCII text, a few characters changed: {bad} of {n} python-fossil-delta patches are not"
            f" valid UTF-8; trunkline's: 0 by construction ({ours} of {len(pairs)} document patches checked)"
        )
    print()


def _utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def fanout(subscribers: int, publications: int) -> None:
    print(f"## hub fan-out to {subscribers} JSON subscribers, {publications} publications\n")
    print("| subscribers are | µs per publication | µs per delivery | bytes per delivery |")
    print("|---|---|---|---|")
    docs = [document(i) for i in range(publications + 1)]
    results = {}
    for label, shape in (("plain JSON", JSON_SHAPE), ("delta (fossil)", JSON_DELTA_SHAPE)):
        sizes: list[int] = []

        def run(shape: object = shape, sizes: list[int] = sizes) -> None:
            hub: Hub[int] = Hub()
            sink: list[bytes] = []
            for conn in range(subscribers):
                hub.add_pending("c", conn, lambda pub: None)
                hub.activate("c", conn, shape, sink.append, positioned=True)  # type: ignore[arg-type]
            for offset, data in enumerate(docs, 1):
                hub.broadcast("c", Publication(data=data, offset=offset, epoch="e", delta=True))
            sizes[:] = [len(sink[-1])]  # a late publication's line: a patch for delta subscribers

        per_run = best(run, 1, rounds=5)
        per_pub = per_run / len(docs)
        results[label] = per_pub
        print(f"| {label} | {per_pub * 1e6:.1f} | {per_pub / subscribers * 1e6:.3f} | {sizes[0]} |")
    extra = results["delta (fossil)"] - results["plain JSON"]
    per_pub_text = f"{extra * 1e6:+.1f} µs per publication on the channel"
    print(f"\ndelta costs {per_pub_text}, {extra / subscribers * 1e6:+.3f} µs per delivery")
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--publications", type=int, default=200)
    args = parser.parse_args()
    pairs = [(document(i), document(i + 1)) for i in range(50)]
    print(
        f"document: {len(pairs[0][1])} bytes; patch of one version to the next: {len(fossil.create(*pairs[0]))} bytes\n"
    )
    encoder(pairs)
    for n in (1, 100, args.subscribers):
        fanout(n, args.publications)


if __name__ == "__main__":
    main()
